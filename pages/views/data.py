"""The Data page: pick or upload a dataset of any kind and see how it will be split.

A thin script: the kinds of data and their built-ins come from the one dataset registry
(`core.data.registry`), grouped by modality; each modality has one view here (`VIEWS`). It reads
widget state, calls `core.data`, and draws. Every failure the user can fix arrives as a
`UserError` and is shown as its sentence with `st.error`, never a traceback.
"""

from __future__ import annotations

import importlib

import streamlit as st

from core.data.registry import data_modalities
from core.errors import UserError

# One view per modality the registry groups its kinds into (`DatasetKind.modality`): (module, function),
# imported only when that modality is picked.
VIEWS = {
    "Text": ("pages.text_data", "text_main"),
    "Images": ("pages.image_data", "image_main"),
    "NER": ("pages.ner_data", "ner_main"),
    "Image + text": ("pages.pair_data", "pair_main"),
    "Instructions": ("pages.instruction_data", "instruction_main"),
}


def main() -> None:
    st.title("Data")
    modalities = list(data_modalities())
    modality = st.segmented_control(
        "Kind of data",
        modalities,
        default=modalities[0],
        key="data_modality",
        help="Text datasets train text classifiers, image datasets image classifiers, NER datasets entity taggers; "
        "image + text datasets align or fuse the two; instruction datasets (prompts and responses) tune a language model.",
    )
    module, view = VIEWS[modality or modalities[0]]
    getattr(importlib.import_module(module), view)()


try:
    main()
except UserError as error:
    st.error(str(error))

"""Fine-tune & explain workbench: the Streamlit entry point (`streamlit run app.py`)."""

import streamlit as st

from pages import PAGE_ICONS

st.set_page_config(page_title="Fine-tune & explain workbench", page_icon=":material/science:", layout="wide")

PAGES = [
    st.Page(path, title=title, icon=PAGE_ICONS[path], default=path == "pages/views/home.py")
    for path, title in (
        ("pages/views/home.py", "Home"),
        ("pages/views/data.py", "Data"),
        ("pages/views/train.py", "Train"),
        ("pages/views/runs.py", "Runs"),
        ("pages/views/sweeps.py", "Sweeps"),
        ("pages/views/inspect.py", "Inspect"),
    )
]

st.navigation(PAGES).run()

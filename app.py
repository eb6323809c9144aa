"""Fine-tune & explain workbench: the Streamlit entry point (`streamlit run app.py`)."""

import streamlit as st

st.set_page_config(page_title="Fine-tune & explain workbench", page_icon="🧪", layout="wide")

PAGES = [
    st.Page("pages/views/home.py", title="Home", icon="🏠", default=True),
    st.Page("pages/views/data.py", title="Data", icon="📄"),
    st.Page("pages/views/train.py", title="Train", icon="🏋️"),
    st.Page("pages/views/runs.py", title="Runs", icon="📈"),
    st.Page("pages/views/inspect.py", title="Inspect", icon="🔍"),
]

st.navigation(PAGES).run()

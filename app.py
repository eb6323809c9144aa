"""Fine-tune & explain workbench: the Streamlit entry point (`streamlit run app.py`)."""

import streamlit as st

st.set_page_config(page_title="Fine-tune & explain workbench", page_icon="🧪", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon="🏠", default=True),
    st.Page("pages/data.py", title="Data", icon="📄"),
    st.Page("pages/train.py", title="Train", icon="🏋️"),
    st.Page("pages/runs.py", title="Runs", icon="📈"),
]

st.navigation(PAGES).run()

"""The fine-tune & explain workbench core: everything the UI does, usable from Python and the CLI.

This package never imports streamlit. Entry point for the command line: `python -m core --help`.
"""

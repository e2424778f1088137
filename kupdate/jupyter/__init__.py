"""Jupyter support: a kernel with the KB opened as `kb`, the `%kupdate` magics, rich display.

- `kernelspec`: install, list and remove kupdate kernels (`kupdate kernel ...`);
- `kernel`: the kernel process (`python -m kupdate.jupyter.kernel -f CONNECTION_FILE`);
- `magics`: `%kupdate VERB ...` and `%%ask`, loaded by `%load_ext kupdate`;
- `display`: HTML and text renderings of answers and search results (stdlib only).

Nothing is imported here, so `Answer._repr_html_` can use `display` without ipykernel installed.
"""

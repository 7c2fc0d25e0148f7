"""``gridtsne serve``: an HTTP API that runs ``gridtsne run`` jobs for callers (docs/service.md).

One module per concern: ``config`` (the operator's settings), ``store`` (SQLite jobs and keys),
``keys`` (API keys, share tokens, their hashes and the server secret), ``security`` (URL
allowlists, SSRF checks and output ownership), ``limits`` (requests per minute), ``schemas``
(request bodies), ``jobs`` (child processes), ``links`` (URLs a browser can open),
``responses`` (the answers' shape) and ``app`` (the FastAPI app).
"""

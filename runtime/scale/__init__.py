"""Scale out on Ray: `tr2m-batch` (many videos over an actor pool) and `tr2m-serve` (an HTTP
depth service with dynamic batching and a page for people).

Ray is the optional extra ``tr2m[ray]``; nothing here imports it until a command runs, and a
missing Ray is a one-line error that names the extra. A client of the service needs no Ray:
``from runtime.scale.client import DepthClient``.
"""

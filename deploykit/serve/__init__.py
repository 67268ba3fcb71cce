"""`deploykit serve`: artifacts behind a KServe v2 (Triton) endpoint, on Triton's own server."""

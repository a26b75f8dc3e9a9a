"""The wire format: the `vigil.v1` and Open Inference Protocol `.proto` files with their generated code (regenerated
by `generate`, never edited by hand), numpy ↔ wire tensors (`tensors`) and the server-timing trailer (`timing`),
shared by server and clients. Imports nothing else of Vigil's.
"""

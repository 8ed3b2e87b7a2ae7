"""Other programs' weights files, read into vggnet's layer names.

A reader here knows a file format, not the models: the caller gives it the layout of the
paper's configurations (:mod:`vggnet.models.weights` does), so this room sits below
``models`` and imports nothing of vggnet but its errors.
"""

"""The three methods, one package each: what makes a paper's method different, on top of the shared kinds.

A method package imports the shared packages (``wsi``, ``data``, ``transforms``, ``inferers``, ``metrics``,
``rounds``, ``handlers``, ``utils``) and never another method; no shared package imports a method.
"""

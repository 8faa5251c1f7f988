"""One file per architecture, each exposing `Params` and `build(spec, params) -> keras.Model`."""

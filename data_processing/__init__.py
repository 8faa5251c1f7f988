"""Raw datasets in, one fixed COCO-compatible annotation format out. Imports no Keras."""

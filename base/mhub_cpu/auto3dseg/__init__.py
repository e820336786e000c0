"""Auto3DSeg models: the zip format of the Slicer catalogue, labels and the model catalogue."""

"""Runtime of text4vis-serve: decoding, sampling, preprocessing, backends, the classify pipeline."""

"""The archive: video embeddings stored once (LanceDB), re-labelled under any vocabulary and searched by text."""

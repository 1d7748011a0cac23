"""Data: the corpus catalogue, text sources, token shards and the DataModules."""

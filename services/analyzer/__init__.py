"""The analyzer service: language, keywords and entities for every chunk."""

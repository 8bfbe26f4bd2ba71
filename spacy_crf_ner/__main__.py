"""``python -m spacy_crf_ner``: the command line of ``spacy_crf_ner.cli``."""

if __name__ == "__main__":
    from spacy_crf_ner.cli import module_main

    module_main()

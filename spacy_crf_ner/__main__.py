from spacy_crf_ner.cli import main

main()

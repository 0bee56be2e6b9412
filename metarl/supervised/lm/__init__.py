"""Language modelling on the sequence cores (``env=lm``, ``env=lm/<corpus>``): corpora and their readers
(``data``), tokenisers, contiguous streams with carried state (``streams``), the model, task and evaluation
(``task``). Importing this package registers the ``lm`` env schema, task and trainer."""
from .data import CORPORA, Corpus, default_corpus, read_corpus, split_of
from .streams import LMBatch, Streams
from .task import LanguageModel, LanguageModelling, LMConfig, build_language_model, evaluate_tokens
from .tokenizers import TOKENIZERS, ByteTokenizer, CharTokenizer, WordTokenizer, fit_tokenizer, tokenizer_from_dict

__all__ = ["CORPORA", "Corpus", "default_corpus", "read_corpus", "split_of", "LMBatch", "Streams",
           "LanguageModel", "LanguageModelling", "LMConfig", "build_language_model", "evaluate_tokens",
           "TOKENIZERS", "ByteTokenizer", "CharTokenizer", "WordTokenizer", "fit_tokenizer", "tokenizer_from_dict"]

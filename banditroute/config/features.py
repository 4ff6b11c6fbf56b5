"""What the contextual policies read from a request: the ``features`` declaration.

``Router(policy="linear", features={...})`` maps each context field to how it is read:

- a number (the *scale*): a numeric field, divided by the scale (``"prompt_tokens": 1000.0``);
- :class:`Text`: a text field (the prompt) hashed into ``2**bits`` buckets of word or character
  n-grams, as Vowpal Wabbit and scikit-learn's ``HashingVectorizer`` do;
- :class:`Category`: a string field (a tenant, a language code) hashed into ``2**bits`` buckets,
  one per value (one-hot; a collision shares a bucket).

In a routes file::

    [router.features]
    prompt_tokens = 1000.0
    prompt = { kind = "text", analyzer = "word", ngrams = 2, bits = 8 }
    tenant = "category"

The hashing itself is :mod:`banditroute.policies.featurize`.

>>> Text(ngrams=2).bits, Text(analyzer="char").ngrams
(8, 3)
>>> Text(analyzer="letters")
Traceback (most recent call last):
...
banditroute.errors.ConfigError: features.analyzer must be 'word' or 'char', got 'letters'
>>> feature_spec("tenant", "category")
Category(bits=6)
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import ConfigError
from .hygiene import check_text, invalid
from .profiles import check_number

__all__ = ["Text", "Category", "MAX_BITS", "feature_spec", "check_features"]

#: a hashed field has at most 2**MAX_BITS buckets (the linear policy keeps three d x d float64
#: matrices per profile: 11 bits are 96 MiB per profile, 8 bits 1.5 MiB)
MAX_BITS = 11


def _check_bits(owner: str, bits) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise invalid(ConfigError, f"{owner}.bits", bits, f"must be an integer from 1 to {MAX_BITS}")


@dataclass(frozen=True, kw_only=True)
class Text:
    """A text field read as hashed n-grams.

    Parameters
    ----------
    analyzer : {"word", "char"}
        Word n-grams (lower-cased runs of letters and digits) or character n-grams (of the
        lower-cased text, spaces included).
    ngrams : int or None
        Word analyzer: every n-gram from 1 to ``ngrams`` words (default 1). Char analyzer:
        n-grams of exactly ``ngrams`` characters (default 3).
    bits : int
        The field gets ``2**bits`` buckets of its own (8: 256).
    lowercase : bool

    The bucket counts of a request are scaled to unit Euclidean norm, so a long prompt weighs
    as much as a short one.
    """

    analyzer: str = "word"
    ngrams: int | None = None
    bits: int = 8
    lowercase: bool = True

    def __post_init__(self) -> None:
        if self.analyzer not in ("word", "char"):
            raise ConfigError("features.analyzer", self.analyzer, "must be 'word' or 'char'")
        if self.ngrams is None:  # stored resolved: Text(analyzer="char") == Text(analyzer="char", ngrams=3)
            object.__setattr__(self, "ngrams", 3 if self.analyzer == "char" else 1)
        if isinstance(self.ngrams, bool) or not isinstance(self.ngrams, int) or not 1 <= self.ngrams <= 8:
            raise invalid(ConfigError, "features.ngrams", self.ngrams, "must be an integer from 1 to 8")
        _check_bits("features", self.bits)
        if not isinstance(self.lowercase, bool):
            raise ConfigError("features.lowercase", self.lowercase, "must be true or false")

    @property
    def size(self) -> int:
        return 1 << self.bits


@dataclass(frozen=True, kw_only=True)
class Category:
    """A string field read as one hashed indicator per value (``2**bits`` buckets, 6: 64)."""

    bits: int = 6

    def __post_init__(self) -> None:
        _check_bits("features", self.bits)

    @property
    def size(self) -> int:
        return 1 << self.bits


_KINDS = {"text": Text, "category": Category}


def feature_spec(name: str, value):
    """One field's declaration: a positive scale (a number), a :class:`Text` or :class:`Category`,
    the name ``"text"`` / ``"category"``, or a routes-file table ``{kind = "text", ...}``."""
    if isinstance(value, (Text, Category)):
        return value
    if isinstance(value, str):
        if value not in _KINDS:
            raise ConfigError(f"features.{name}", value, "must be a scale (a number), 'text' or 'category'")
        return _KINDS[value]()
    if isinstance(value, dict):
        options = dict(value)
        kind = options.pop("kind", None)
        if kind not in _KINDS:
            raise ConfigError(f"features.{name}.kind", kind, "must be 'text' or 'category'")
        allowed = {f.name for f in fields(_KINDS[kind])}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ConfigError(f"features.{name}", unknown, f"are not options of {kind} (known: {sorted(allowed)})")
        try:
            return _KINDS[kind](**options)
        except ConfigError as exc:
            raise exc.renamed(f"features.{name}.{exc.field.split('.')[-1]}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(ConfigError, f"features.{name}", value,
                      "must be a scale (a number), 'text', 'category', a Text or a Category")
    check_number(f"features.{name}", value, lo=0.0, lo_open=True)
    return float(value)


def check_features(features) -> tuple:
    """The ``features`` setting as a tuple of ``(field, scale | Text | Category)`` (checked)."""
    if not isinstance(features, tuple) or not all(
            isinstance(f, tuple) and len(f) == 2 and isinstance(f[0], str) for f in features):
        raise ConfigError("features", features, "must be a mapping of field -> scale, Text or Category")
    out = []
    for name, spec in features:
        check_text("features", name)  # a context field
        if name in ("task_type", "task_probs"):
            raise ConfigError(f"features.{name}", spec, "cannot be declared: the field is read by the task-type "
                              "posterior (its one-hot or probabilities already enter every feature vector)")
        out.append((name, feature_spec(name, spec)))
    return tuple(out)

"""The pure heart of unveil: the flag model, the flags document and evaluation.

No I/O, no clock, no framework. Hand it data, it hands back data.
"""

from __future__ import annotations

from unveil.core.codec import FORMAT_VERSION, document_to_data, parse_document
from unveil.core.errors import InvalidDocument, Problem, UnknownBucketingScheme, UnveilError
from unveil.core.evaluation import Evaluation, ReferenceEvaluator
from unveil.core.model import (
    Clause,
    Document,
    ErrorCode,
    Flag,
    FlagKind,
    Operator,
    Prerequisite,
    Reason,
    Rollout,
    Rule,
    Sample,
    Segment,
    SegmentMatch,
    SegmentRule,
)
from unveil.core.ruleset import Ruleset

__all__ = [
    "FORMAT_VERSION",
    "Clause",
    "Document",
    "ErrorCode",
    "Evaluation",
    "Flag",
    "FlagKind",
    "InvalidDocument",
    "Operator",
    "Prerequisite",
    "Problem",
    "Reason",
    "ReferenceEvaluator",
    "Rollout",
    "Rule",
    "Ruleset",
    "Sample",
    "Segment",
    "SegmentMatch",
    "SegmentRule",
    "UnknownBucketingScheme",
    "UnveilError",
    "document_to_data",
    "parse_document",
]

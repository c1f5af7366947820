"""``ipcwire choose``: which mechanism, for this situation, on this machine.

::

    from ipcwire.advisor import Answers, advise
    advice = advise(Answers(relation="parent-child", progress=True))
    advice.recommended.url      # 'unix:///run/user/1000/app.sock'

The rules are data (:mod:`ipcwire.advisor.rules`), read together with the registry's
capabilities and this machine's availability (:mod:`ipcwire.advisor.engine`), and weighed with
``ipcwire bench`` results when there are some (:mod:`ipcwire.advisor.evidence`).
"""

from __future__ import annotations

from ipcwire.advisor.engine import Advice, Candidate, advise
from ipcwire.advisor.evidence import BenchResults, Measured
from ipcwire.advisor.questions import QUESTIONS, Answers, Question
from ipcwire.advisor.rules import REQUIREMENTS, RULES, Condition, Pick, Requirement, Rule

__all__ = [
    "QUESTIONS",
    "REQUIREMENTS",
    "RULES",
    "Advice",
    "Answers",
    "BenchResults",
    "Candidate",
    "Condition",
    "Measured",
    "Pick",
    "Question",
    "Requirement",
    "Rule",
    "advise",
]

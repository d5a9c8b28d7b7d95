"""Follow-up questions: recognising them, and folding the conversation's topic into what is searched for.

Pure query logic: nothing here needs Gradio, and ``assistant.conversation`` must import without it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from assistant.conversation import is_follow_up, message_text, resolve_query


# -- follow-up questions ------------------------------------------------------------------------------
@pytest.mark.parametrize("question", ["那第二点具体怎么做？", "它的原理是什么？", "这个怎么实现？", "具体怎么做？", "为什么？",
                                      "tell me more about that", "How does it work?", "why?", "Tell me more.",
                                      "What about the second point?"])
def test_follow_ups_are_recognised(question):
    assert is_follow_up(question)


@pytest.mark.parametrize("question", ["初创公司缺少训练数据怎么办？", "注意力机制的原理是什么？", "大模型训练时怎样让数据输入更快？",
                                      "How can a small startup get enough compute?",
                                      "What does the GAN example use as its loss?", "什么是GAN？", ""])
def test_standalone_questions_are_not_follow_ups(question):
    assert not is_follow_up(question)


def test_resolve_query_folds_in_the_previous_question():
    history = [{"role": "user", "content": "注意力机制的原理是什么？"}, {"role": "assistant", "content": "…[1]"}]
    assert resolve_query("那第二点具体怎么做？", history) == "注意力机制的原理是什么？ 那第二点具体怎么做？"
    assert resolve_query("tell me more about that", history) == "注意力机制的原理是什么？ tell me more about that"
    # a question that stands alone, or the first question, is searched for as it is
    assert resolve_query("How can a small startup get enough compute?", history) == \
        "How can a small startup get enough compute?"
    assert resolve_query("那第二点具体怎么做？", []) == "那第二点具体怎么做？"


def test_resolve_query_uses_the_topic_of_a_chain_of_follow_ups():
    history = [{"role": "user", "content": "注意力机制的原理是什么？"}, {"role": "assistant", "content": "a"},
               {"role": "user", "content": "那第二点具体怎么做？"}, {"role": "assistant", "content": "b"}]
    assert resolve_query("为什么？", history) == "注意力机制的原理是什么？ 为什么？"


def test_resolve_query_reads_gradio_message_parts_and_respects_the_limit():
    history = [{"role": "user", "content": [{"type": "text", "text": "GAN 的损失函数是什么"}]}]
    assert message_text(history[0]["content"]) == "GAN 的损失函数是什么"
    assert resolve_query("tell me more", history) == "GAN 的损失函数是什么 tell me more"
    long = [{"role": "user", "content": "注意力" * 500}]
    folded = resolve_query("为什么？", long, limit=100)
    assert len(folded) <= 100 and folded.endswith(" 为什么？")


def test_conversation_imports_without_gradio():
    probe = "import sys, assistant.conversation; print(sorted(m for m in sys.modules if m.split('.')[0] == 'gradio'))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.stdout.strip() == "[]"

"""The page's handlers for the documents panel and for ratings, with the fake embedder (no server, no browser).

The document list (title, type, size, date added, passages, preview, Delete), uploads with progress, "already
indexed", a different version waiting for Replace / Keep, deleting with progress (and the previous index still
answering when that fails), and ratings stored with the answer they rate. The same in a browser:
test_browser.py.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from assistant import feedback
from assistant.errors import AssistantError, IndexStoreError
from assistant.render import documents_html
from assistant.types import IndexedDocument
from assistant.ui import WAITING, ChatHandlers, answer_key, plain_message
from test_ui import OFFSITE, _assistant, _final, built  # noqa: F401  (built: a fixture)

FIRST = "000_6d8c0b3cedab2c30.txt"  # the default corpus's first document: "大模型创业的航向标：行业痛点及解决方案"


@pytest.fixture
def handlers(built, tmp_path) -> ChatHandlers:
    return ChatHandlers(_assistant(built, tmp_path), stream_delay=0)


def _upload(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / "uploads" / f"{len(list(tmp_path.glob('uploads/*')))}" / name  # a folder per upload
    path.parent.mkdir(parents=True)
    path.write_text(text, "utf-8")
    return str(path)


# -- the document list ----------------------------------------------------------------------------------
def test_the_document_list_shows_each_documents_title_type_size_date_passages_and_preview():
    documents = (IndexedDocument("notes/园艺.md", 120, 3, "园艺指南", "md", 12_600, "2025-01-31T12:00:00Z",
                                 "# 园艺指南 番茄需要阳光。 ## 施肥 每两周施一次**有机肥**。"),
                 IndexedDocument('x"><b>bad</b>.txt', 10, 1, "", "txt", 512, "", "<script>1</script>"))
    shown = documents_html(documents)
    first, second = re.findall(r'<details class="doc">.*?</details></details>', shown)
    assert '<span class="doc-title">园艺指南</span>' in first and '<span class="doc-name">notes/园艺.md</span>' in first
    assert "MD · 12.3 KB · " in first and ">2025-01-31</span>" in first and 'title="added 2025-01-31 12:00:00 UTC"' in first
    assert "3 passages" in first and '<div class="doc-preview">园艺指南 番茄需要阳光。 施肥 每两周施一次有机肥。</div>' in first
    assert '<button class="delete-doc" value="notes/园艺.md">Delete</button>' in first
    assert first.index('<details class="doc-delete"><summary>Delete…</summary>') < first.index('class="delete-doc"')
    # no title: its name stands in; a hostile name and preview are text, never markup
    assert '<span class="doc-title">x&quot;&gt;&lt;b&gt;bad&lt;/b&gt;.txt</span>' in second and "doc-name" not in second
    assert "TXT · 512 B · 1 passage<" in second and "<b>" not in second and "<script>" not in second
    assert 'value="x&quot;&gt;&lt;b&gt;bad&lt;/b&gt;.txt"' in second
    assert "No documents" in documents_html(())


def test_the_pages_document_list_is_the_serving_indexs(handlers):
    shown = handlers.documents_html()
    assert shown.count('<details class="doc">') == 5
    assert '<span class="doc-title">大模型创业的航向标：行业痛点及解决方案</span>' in shown
    assert re.search(rf'<span class="doc-name">{FIRST}</span> · TXT · [\d.]+ KB · <span title="added [^"]+">'
                     r"\d{4}-\d\d-\d\d</span> · \d+ passages", shown)
    assert "<details class=\"doc-list" not in handlers.status_markdown()  # the status is the counts only


# -- uploads --------------------------------------------------------------------------------------------
def test_an_upload_shows_its_progress_at_once_and_an_identical_one_is_already_indexed(handlers, tmp_path):
    steps = list(handlers.add_steps([_upload(tmp_path, "offsite.md", OFFSITE)]))
    first, final = steps[0][0], steps[-1][0]
    assert first.startswith("**Adding documents…** ") and re.search(r" · \d+ s$", first)
    assert final.startswith("**Added 1 document** — 1 new passage") and "✓ offsite.md" in final
    assert "6 documents" in steps[-1][1] and '<span class="doc-title">团队团建</span>' in handlers.documents_html()
    *_, (again, status) = handlers.add_steps([_upload(tmp_path, "offsite.md", OFFSITE)])
    assert again.startswith("**Already indexed**") and "offsite.md (already indexed)" in again
    assert "Added" not in again and "new passage" not in again and "6 documents" in status


def test_a_different_version_waits_for_the_users_answer_then_replaces(handlers, tmp_path):
    corpus = handlers.settings.corpus
    before = (corpus / FIRST).read_bytes()
    report, _ = handlers.add_files([_upload(tmp_path, FIRST, "# 新版本\n\n全新的内容：团建改在周五。")], session="tab-1")
    assert report.startswith("**Replace it?**") and f"✗ **{FIRST}**: {html.escape(WAITING)}" in report
    assert (corpus / FIRST).read_bytes() == before  # nothing replaced before the user says so
    waiting = handlers.waiting.paths("tab-1")
    assert [p.name for p in waiting] == [FIRST] and handlers.waiting.paths("tab-2") == []
    assert not waiting[0].is_relative_to(tmp_path) and not waiting[0].is_relative_to(corpus)
    steps = list(handlers.replace_steps("tab-1"))
    assert steps[0][0].startswith("**Replacing…** ")
    assert steps[-1][0].startswith("**Replaced 1 document**") and f"✓ {FIRST} (replaced)" in steps[-1][0]
    assert "团建改在周五" in (corpus / FIRST).read_text("utf-8")
    assert '<span class="doc-title">新版本</span>' in handlers.documents_html()
    assert handlers.waiting.paths("tab-1") == [] and not waiting[0].parent.parent.exists()  # cleaned up


def test_keep_discards_the_waiting_upload_and_without_a_session_it_is_refused(handlers, tmp_path):
    corpus = handlers.settings.corpus
    before = (corpus / FIRST).read_bytes()
    upload = _upload(tmp_path, FIRST, "别的内容。")
    handlers.add_files([upload], session="tab-1")
    waiting = handlers.waiting.paths("tab-1")[0]
    report = handlers.keep_waiting("tab-1")
    assert report.startswith("**Kept the indexed version**") and FIRST in report
    assert not waiting.exists() and not waiting.parent.parent.exists() and (corpus / FIRST).read_bytes() == before
    report, _ = handlers.add_files([upload])  # no session to answer for: refused, as the CLI refuses it
    assert "different version" in report and "--replace" in report and handlers.waiting.paths("") == []
    handlers.add_files([upload], session="tab-2")
    handlers.waiting.discard("tab-2")  # the tab was closed
    assert handlers.waiting.paths("tab-2") == [] and (corpus / FIRST).read_bytes() == before


# -- deleting -------------------------------------------------------------------------------------------
def test_deleting_a_document_shows_progress_then_the_list_without_it(handlers):
    steps = list(handlers.remove_steps(FIRST))
    assert steps[0][0].startswith(f"**Deleting {FIRST}…** ")
    report, status = steps[-1]
    assert report.startswith("**Deleted 1 document** — 4 documents, ") and f"✓ {FIRST}" in report
    assert "4 documents" in status and FIRST not in handlers.documents_html()
    assert not (handlers.settings.corpus / FIRST).exists()
    _, content = _final(handlers, "初创公司缺少训练数据怎么办？")
    assert FIRST not in content


def test_a_failed_delete_says_why_without_server_paths_and_the_previous_index_answers(handlers, monkeypatch):
    index = handlers.settings.index

    def full_disk(*args, **kwargs):
        raise IndexStoreError(f"no space left on the disk of {index} while writing the new index")

    monkeypatch.setattr(handlers.assistant, "build", full_disk)
    *_, (report, status) = handlers.remove_steps(FIRST)
    assert report.startswith("**Nothing deleted**") and "no space left on the disk of index" in report
    assert str(index) not in report and str(index.parent) not in report
    assert "5 documents" in status and FIRST in handlers.documents_html()
    assert (handlers.settings.corpus / FIRST).exists()  # put back
    _, content = _final(handlers, "初创公司缺少训练数据怎么办？")
    assert f'<span class="doc">{FIRST}</span>' in content
    report, _ = handlers.remove_documents(["no-such.md"])
    assert "Nothing deleted" in report and "not in the index: no-such.md" in report


# -- ratings --------------------------------------------------------------------------------------------
def test_a_rating_is_stored_with_the_question_the_answer_its_citations_and_reader(handlers):
    messages, _ = _final(handlers, "初创公司缺少训练数据怎么办？")
    answer = messages[-1]
    assert answer_key(answer) and handlers.can_rate(answer)
    messages, _ = _final(handlers, "注意力机制的原理是什么？", messages)  # the first answer keeps its key
    assert answer_key(messages[1]) == answer_key(answer) and answer_key(messages[-1]) != answer_key(answer)
    assert plain_message(messages[1]) == {"role": "assistant", "content": answer["content"],
                                          "metadata": {"id": answer_key(answer)}}

    handlers.rate(messages[1], -1, "  the second passage is off-topic ")
    handlers.rate(messages[-1], 1)
    path = feedback.feedback_path(handlers.settings.index)
    first, second = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    assert (first["rating"], first["comment"], first["question"]) == (-1, "the second passage is off-topic",
                                                                    "初创公司缺少训练数据怎么办？")
    assert first["citations"] and all(c["source"] in answer["content"] and c["quote"] for c in first["citations"])
    assert first["answer"] and first["reader"] == handlers.assistant.reader.name
    assert (second["rating"], second["comment"], second["question"]) == (1, "", "注意力机制的原理是什么？")


def test_only_answers_can_be_rated(handlers):
    refused, _ = _final(handlers, "x" * (handlers.settings.max_question_chars + 1))
    for message in (refused[-1], {"role": "user", "content": "hi"}, {"role": "assistant", "content": "old",
                                                                    "metadata": {"id": "from-before-a-restart"}}):
        assert not handlers.can_rate(message)
        with pytest.raises(AssistantError, match="can be rated"):
            handlers.rate(message, 1)
    assert not feedback.feedback_path(handlers.settings.index).exists()

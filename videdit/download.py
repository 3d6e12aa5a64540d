"""One file over HTTP(S) into a `.part` file: resumable, with progress, through Google Drive's confirmation page.

Knows nothing of the weights registry: `videdit.weights` says what to fetch, checks what arrived and
puts it in place. Standard library only (urllib), and no state between calls: each download has its
own opener and cookie jar.

Resuming: the bytes already in the `.part` file are asked for no more (`Range: bytes=N-`); a server that
answers 200 instead of 206, or a range starting elsewhere, starts the file over. A transfer cut off
midway is resumed at once, a few times while each try brings more bytes, then left for the next call.

Google Drive serves a file too large to scan for viruses (about 100 MB and up) as an HTML page asking
to confirm. The page names the file's real URL in one of two ways, both handled: the current layout,
a `<form id="download-form" action=...>` whose hidden inputs (id, export, confirm, uuid) make the query;
the older one, a `download_warning...` cookie whose value goes in `confirm=`, and a link
`/uc?export=download&confirm=...&id=...`. A page with neither is a refusal (download quota exceeded,
file not shared, removed), reported with the page's own words.
"""
from __future__ import annotations

import html
import http.client
import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

from videdit import __version__, progress
from videdit.errors import DownloadError

DRIVE_URL = "https://drive.google.com/uc"  # Drive's download endpoint (tests pass a local server's)
_CHUNK = 1 << 20
_MIB = 1 << 20
_MAX_PAGE = 2 << 20  # a confirmation or error page is a few kB; a larger HTML answer is not one
_RESUMES = 4  # interrupted transfers resumed within one call, while each brings more bytes
_HEADERS = {"User-Agent": f"videdit/{__version__} (urllib)", "Accept-Encoding": "identity"}


def drive_url(file_id: str, base: str = DRIVE_URL) -> str:
    """The download URL of a Drive file id (what `gdown --id` starts from)."""
    return f"{base}?{urllib.parse.urlencode({'export': 'download', 'id': file_id})}"


class _Interrupted(Exception):
    """The connection ended before the whole file came; the bytes so far are in the .part file."""


def download(url: str, part: Path, *, drive: bool = False, timeout: float = 30.0, desc: str = "") -> None:
    """Make `part` hold the whole file at `url` (through Drive's confirmation page when `drive`).

    Raises DownloadError (one line: what went wrong, not what to do about it) when the server cannot
    be reached, refuses, or keeps cutting the transfer off; `part` then keeps what arrived.
    """
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    resumes = 0
    while True:
        before = _size(part)
        try:
            _transfer(opener, url, Path(part), drive=drive, timeout=timeout, desc=desc)
            return
        except _Interrupted as cut:
            resumes += 1
            if resumes > _RESUMES or _size(part) <= before:
                raise DownloadError(f"{cut}; run the same command again to resume") from None


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _transfer(opener, url: str, part: Path, *, drive: bool, timeout: float, desc: str) -> None:
    have = _size(part)
    response = _open(opener, url, have, timeout)
    if response is None:  # 416: the .part already holds every byte there is; the caller checks it
        return
    if drive:
        response = _through_confirmation(opener, response, have, timeout)
        if response is None:
            return
    with response:
        start, total = _body_range(response, have)
        got = start
        mode = "ab" if start else "wb"  # the server ignored or moved the range: start the file over
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, mode) as out, progress.bar(_mib(total), desc, unit="MiB", initial=_mib(start) or 0) as bar:
            while True:
                try:
                    block = response.read(_CHUNK)
                except (http.client.IncompleteRead, OSError) as err:
                    raise _Interrupted(f"the transfer broke off at {got} of {total or '?'} bytes ({_why(err)})") from None
                if not block:
                    break
                out.write(block)
                got += len(block)
                bar.update(_mib(got) - bar.n)
    if total is not None and got < total:
        raise _Interrupted(f"the transfer broke off at {got} of {total} bytes")


def _mib(size: int | None) -> int | None:
    return None if size is None else -(-size // _MIB)


def _open(opener, url: str, have: int, timeout: float):
    headers = dict(_HEADERS, Range=f"bytes={have}-") if have else dict(_HEADERS)
    try:
        return opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            return None
        raise DownloadError(f"the server answered HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise DownloadError(f"could not connect ({_why(err.reason)})") from None
    except (OSError, http.client.HTTPException) as err:
        raise DownloadError(f"could not connect ({_why(err)})") from None


def _why(err) -> str:
    """A short reason for a network error (its errno words, not its repr)."""
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, TimeoutError):
        return "no answer in time"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def _body_range(response, have: int) -> tuple[int, int | None]:
    """(where in the file the body starts, the file's whole size or None)."""
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if response.status == 206:
        match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
        if match and int(match[1]) == have:
            return have, int(match[3]) if match[3] != "*" else (have + length if length is not None else None)
        raise DownloadError(f"the server resumed at the wrong place ({response.headers.get('Content-Range')!r}); "
                            "delete the .part file to start over")
    return 0, length


def _is_html(response) -> bool:
    return response.headers.get_content_type() in ("text/html", "application/xhtml+xml")


def _through_confirmation(opener, response, have: int, timeout: float):
    """The response carrying the file itself, past at most two confirmation pages (None: see _open)."""
    pages = 0
    while _is_html(response):
        with response:
            page = response.read(_MAX_PAGE).decode("utf-8", "replace")
            page_url = response.geturl()
        target = _confirmed_url(page, page_url, opener)
        if target is None:
            raise DownloadError(f"Google Drive did not serve the file: {_refusal(page)}")
        if pages == 2:
            raise DownloadError("Google Drive kept answering with a confirmation page")
        pages += 1
        response = _open(opener, target, have, timeout)
        if response is None:
            return None
    return response


class _PageParts(HTMLParser):
    """The download form (action and hidden inputs), the links and the text of a Drive page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.form_action: str | None = None
        self.form_inputs: dict[str, str] = {}
        self.links: list[str] = []
        self.text: list[str] = []
        self._in_form = False
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("id") == "download-form":
            self.form_action, self._in_form = a.get("action", ""), True
        elif tag == "input" and self._in_form and a.get("type") == "hidden" and a.get("name"):
            self.form_inputs[a["name"]] = a.get("value", "")
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = False
        elif tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.text.append(" ".join(data.split()))


def _confirmed_url(page: str, page_url: str, opener) -> str | None:
    """The file's URL a confirmation page names, or None when the page is not one."""
    parts = _PageParts()
    parts.feed(page)
    if parts.form_action is not None:
        action = urllib.parse.urljoin(page_url, parts.form_action)
        query = urllib.parse.urlencode(parts.form_inputs)
        return f"{action}{'&' if '?' in action else '?'}{query}" if query else action
    for href in parts.links:
        if "confirm=" in href and "export=download" in href:
            return urllib.parse.urljoin(page_url, html.unescape(href))
    jar = next(h for h in opener.handlers if isinstance(h, urllib.request.HTTPCookieProcessor)).cookiejar
    token = next((c.value for c in jar if c.name.startswith("download_warning")), None)
    if token:
        split = urllib.parse.urlsplit(page_url)
        query = dict(urllib.parse.parse_qsl(split.query), confirm=token)
        return urllib.parse.urlunsplit(split._replace(query=urllib.parse.urlencode(query)))
    return None


def _refusal(page: str) -> str:
    """What a Drive page that is not a confirmation says, in a few words."""
    parts = _PageParts()
    parts.feed(page)
    words = " ".join(parts.text)
    if re.search(r"quota|too many users", words, re.I):
        return "its download quota is used up for now (too many downloads); try again in a day, or by hand"
    return (words[:160] + "...") if len(words) > 160 else (words or "an HTML page instead of the file")

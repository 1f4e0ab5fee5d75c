// The chat page: send the question, show the answer as it streams (server-sent events over fetch), rendered
// as Markdown while it arrives; stop, copy and regenerate answers; open a cited passage beside the answer.
(function () {
  "use strict";
  const form = document.getElementById("ask-form");
  const list = document.getElementById("messages");
  const textarea = form.querySelector("textarea");
  const button = document.getElementById("ask-button");
  const panel = document.getElementById("passage-panel");
  const panelBody = document.getElementById("passage-body");
  const actionsTemplate = document.getElementById("answer-actions");
  const STOPPED = "Stopped: the answer was cut short.";
  const PHONE = window.matchMedia("(max-width: 699px)");
  let busy = false;
  let current = null; // the answer streaming now: { controller, stopped }

  // --- Markdown as the server renders it (chat/templatetags/answers.py), sanitised with the same rules ---

  // The server's nh3 allow-list: the same tags, links to http(s), mail or this site only, no other attribute.
  const PURIFY = {
    ALLOWED_TAGS: ["p", "br", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li", "h3", "h4",
      "table", "thead", "tbody", "tr", "th", "td", "a", "hr", "del", "small"],
    ALLOWED_ATTR: ["href", "title"],
    ALLOWED_URI_REGEXP: /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i,
    KEEP_CONTENT: true,
  };
  function escapeHtml(text) {
    return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }
  // Raw HTML in an answer is shown as the text it is, as on the server: answers quote documents.
  const markdown = new marked.Marked({
    gfm: true,
    breaks: false,
    renderer: {
      html: (token) => escapeHtml(token.text),
    },
  });

  // Complete what the model is half-way through, so that no Markdown syntax shows while the answer streams:
  // an open code fence or code span is closed, an open ** or * is closed, a link being written waits for
  // its end, and a line holding only a block marker (">", "-", "1.", "#") waits for its text.
  function settle(text) {
    const lines = text.split("\n");
    let fence = null;
    for (const line of lines) {
      const m = line.match(/^ {0,3}(`{3,}|~{3,})/);
      if (m && (fence === null || (m[1][0] === fence[0] && m[1].length >= fence.length))) {
        fence = fence === null ? m[1] : null;
      }
    }
    if (fence !== null) return text + "\n" + fence;
    let last = lines.pop();
    if (/^ {0,3}(?:>\s*)*(?:[-*+]|\d{1,9}[.)]|#{1,6}|`{1,2}|~{1,2}|[-=_*]+)?\s*$/.test(last)) {
      last = "";
    }
    lines.push(last);
    text = lines.join("\n");
    // The paragraph being written: from the last blank line.
    const start = text.search(/\n\s*\n(?![\s\S]*\n\s*\n)/);
    const head = start >= 0 ? text.slice(0, start) : "";
    let tail = start >= 0 ? text.slice(start) : text;
    tail = tail.replace(/!?\[[^\]]*\]\([^)]*$/, "").replace(/!?\[[^\]]*$/, "");
    tail = tail.replace(/[*_`~]+$/, "");
    const spans = tail.split("`");
    if (spans.length % 2 === 0) tail += "`";
    // Outside code spans (the even pieces), count the emphasis markers left open.
    const prose = spans.filter((_, i) => i % 2 === 0).join(" ").replace(/^\s*[*+-]\s/gm, "");
    let closing = "";
    const strong = (prose.match(/\*\*/g) || []).length;
    const single = (prose.replace(/\*\*/g, "").match(/\*/g) || []).length;
    if (single % 2 === 1) closing += "*";
    if (strong % 2 === 1) closing += "**";
    return head + tail + closing;
  }

  // Links that leave the site say where they go, as the server marks them (answers._ExternalLinks).
  function markExternalLinks(root) {
    for (const link of root.querySelectorAll("a[href]")) {
      let url;
      try {
        url = new URL(link.getAttribute("href"), window.location.href);
      } catch {
        link.removeAttribute("href");
        continue;
      }
      if (url.protocol !== "mailto:" && url.origin === window.location.origin) continue;
      const mail = url.protocol === "mailto:";
      const shown = mail ? decodeURIComponent(url.pathname) : url.hostname || "another site";
      link.className = "external";
      link.target = "_blank";
      link.rel = "noopener noreferrer nofollow";
      link.title = mail ? "Writes an e-mail to " + shown : "Opens " + shown + " in a new tab: another site, not this one";
      const marker = document.createElement("small");
      marker.className = "link-host";
      marker.textContent = (mail ? "✉ " : "↗ ") + shown;
      link.appendChild(marker);
    }
  }

  function renderInto(element, text) {
    element.innerHTML = DOMPurify.sanitize(markdown.parse(settle(text)), PURIFY);
    markExternalLinks(element);
  }

  // --- The page ---

  // While the reader is at the bottom, keep the newest text in view; leave them alone if they scrolled up.
  function atBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  }
  function follow(wasAtBottom) {
    if (wasAtBottom) list.scrollTop = list.scrollHeight;
  }

  function bubble(role) {
    document.getElementById("chat-empty")?.remove();
    const div = document.createElement("div");
    div.className = "bubble " + role;
    list.appendChild(div);
    return div;
  }

  function showError(answer, message) {
    answer.classList.add("failed");
    answer.querySelector(".thinking")?.remove();
    const p = document.createElement("p");
    p.className = "error";
    p.setAttribute("role", "alert");
    p.textContent = message;
    answer.appendChild(p);
  }

  function citationsList(citations) {
    const ol = document.createElement("ol");
    ol.className = "citations";
    for (const c of citations) {
      const li = document.createElement("li");
      li.value = c.index;
      if (c.chunk_id) {
        const a = document.createElement("a");
        a.href = c.url;
        a.textContent = c.label;
        li.appendChild(a);
      } else {
        li.textContent = c.label + " (deleted)";
      }
      ol.appendChild(li);
    }
    return ol;
  }

  function addActions(answer) {
    answer.appendChild(actionsTemplate.content.cloneNode(true));
  }

  // The first answer names the conversation: show the new title, and move it to the top of the list.
  function retitle(title) {
    if (!title) return;
    const heading = document.getElementById("conversation-title");
    heading.textContent = title;
    delete heading.dataset.untitled;
    document.title = title + " · RAG chat";
    document.dispatchEvent(new CustomEvent("conversation-retitled", { detail: { title } })); // the list (page.js)
    const current = document.querySelector("#conversation-list li.current");
    current?.parentNode.prepend(current);
  }

  function failureMessage(status, text) {
    if (status === 401 || status === 403) return "Your session has ended: reload the page and sign in again.";
    if (status === 404) return "This conversation no longer exists.";
    if (status === 429) return text || "Too many questions: wait a little and try again.";
    if (status >= 500) return "The server failed to answer. Please try again.";
    return text || "The question could not be sent.";
  }

  // Split a server-sent event stream into its events' JSON data.
  function* parseEvents(state) {
    let cut;
    while ((cut = state.buffer.indexOf("\n\n")) >= 0) {
      const block = state.buffer.slice(0, cut);
      state.buffer = state.buffer.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data) yield JSON.parse(data);
    }
  }

  async function ask(question, body) {
    bubble("user").textContent = question;
    // The server names an untitled conversation after its first question; show it at once.
    if ("untitled" in document.getElementById("conversation-title").dataset) retitle(question.slice(0, 80));
    const answer = bubble("assistant");
    answer.setAttribute("aria-busy", "true");
    const thinking = document.createElement("p");
    thinking.className = "thinking";
    thinking.textContent = "Thinking";
    answer.appendChild(thinking);
    const text = document.createElement("div");
    text.className = "answer streaming";
    answer.appendChild(text);
    const stop = document.createElement("button");
    stop.type = "button";
    stop.className = "link stop-answer";
    stop.textContent = "Stop";
    const streamingActions = document.createElement("div");
    streamingActions.className = "answer-actions";
    streamingActions.appendChild(stop);
    answer.appendChild(streamingActions);
    follow(true);

    const controller = new AbortController();
    const run = { controller, stopped: false };
    current = run;
    let received = "";
    let frame = 0;
    const paint = () => {
      frame = 0;
      const wasAtBottom = atBottom();
      renderInto(text, received);
      follow(wasAtBottom);
    };
    let finished = false;
    try {
      const response = await fetch(form.action, {
        method: "POST", body, headers: { Accept: "text/event-stream" }, credentials: "same-origin",
        signal: controller.signal,
      });
      const type = response.headers.get("Content-Type") || "";
      if (!response.ok || !type.startsWith("text/event-stream")) {
        const detail = type.startsWith("text/plain") ? (await response.text()).trim() : "";
        showError(answer, failureMessage(response.ok ? 500 : response.status, detail));
        // Over the rate limit the question was not saved: put it back, to send again later.
        if (response.status === 429 && !textarea.value) {
          textarea.value = question;
          count();
        }
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      const state = { buffer: "" };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        state.buffer += decoder.decode(value, { stream: true });
        for (const event of parseEvents(state)) {
          if (event.type === "token") {
            thinking.remove();
            received += event.text;
            if (!frame) frame = requestAnimationFrame(paint); // rendered once a frame, however fast tokens come
          } else if (event.type === "done") {
            finished = true;
            cancelAnimationFrame(frame);
            frame = 0;
            thinking.remove();
            text.classList.remove("streaming");
            text.innerHTML = event.html; // rendered and sanitised (nh3) by the server, citations linked
            text.dataset.markdown = event.content;
            if (!event.content) text.remove();
            if (event.error) showError(answer, event.error);
            if (event.citations.length) answer.appendChild(citationsList(event.citations));
            retitle(event.title);
          } else if (event.type === "error") {
            finished = true;
            text.classList.remove("streaming");
            showError(answer, event.error);
          }
        }
      }
      if (!finished) showError(answer, "The answer was cut off. Your question is saved; please try again.");
    } catch (error) {
      if (run.stopped) {
        // The reader stopped it: keep what arrived, marked as stopped (the server saves the same).
        cancelAnimationFrame(frame);
        thinking.remove();
        if (received) {
          renderInto(text, received);
          text.dataset.markdown = received;
        } else {
          text.remove();
        }
        answer.classList.add("stopped");
        const note = document.createElement("p");
        note.className = "stopped-note";
        note.textContent = STOPPED;
        answer.appendChild(note);
      } else {
        showError(answer, "The answer failed (" + error.message + "). Your question is saved; please try again.");
      }
    } finally {
      current = null;
      text.classList.remove("streaming");
      streamingActions.remove();
      addActions(answer);
      answer.removeAttribute("aria-busy");
    }
  }

  async function send(question, body) {
    busy = true;
    button.disabled = true;
    button.textContent = "Answering…";
    form.setAttribute("aria-busy", "true");
    try {
      await ask(question, body);
    } finally {
      busy = false;
      button.disabled = false;
      button.textContent = "Ask";
      form.removeAttribute("aria-busy");
      textarea.focus();
    }
  }

  // --- The question box: its limit shown before it is reached, and said when a paste was cut to it ---

  const notice = document.getElementById("question-notice");
  const LIMIT = textarea.maxLength; // the server's too (chat.services.QUESTION_MAX_CHARACTERS)
  const NEAR = Math.floor(LIMIT * 0.9);
  const characters = (n) => n.toLocaleString("en") + " characters";
  let cut = false; // the last text typed, pasted or dropped did not all fit
  function tell(message, problem = false) {
    notice.textContent = message;
    notice.hidden = !message;
    notice.classList.toggle("problem", problem);
  }
  function count() {
    const length = textarea.value.length;
    if (length < LIMIT) cut = false;
    if (cut) tell(characters(LIMIT) + " at most: the question was cut. Check its end, or upload the long text as a document.", true);
    else if (length >= NEAR) tell(length.toLocaleString("en") + " of " + characters(LIMIT));
    else tell("");
  }
  textarea.addEventListener("beforeinput", (event) => {
    const text = (event.data ?? event.dataTransfer?.getData("text/plain") ?? "").replace(/\r\n?/g, "\n");
    const kept = textarea.value.length - (textarea.selectionEnd - textarea.selectionStart);
    cut = kept + text.length > LIMIT;
    if (cut && kept >= LIMIT) count(); // nothing fits: no input event follows
  });
  textarea.addEventListener("input", count);

  // Enter sends where there is a keyboard; on a touch screen (no Shift+Enter) it starts a new line, and the
  // Ask button sends. The hint saying so is shown under the same condition (app.css).
  const TOUCH = window.matchMedia("(pointer: coarse)");
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !TOUCH.matches) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  form.noValidate = true; // an empty question gets the same message as a blank one, not the browser's
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const question = textarea.value.trim();
    if (busy) return;
    if (!question) {
      tell("Type a question first.", true);
      textarea.focus();
      return;
    }
    const body = new FormData(form);
    textarea.value = "";
    count();
    await send(question, body);
  });

  // --- Stop, copy, regenerate ---

  async function copy(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    const area = document.createElement("textarea"); // plain http: the older way
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    if (!ok) throw new Error("copy refused");
  }

  function say(answer, message) {
    const status = answer.querySelector(".action-status");
    if (status) status.textContent = message;
  }

  async function regenerate() {
    if (busy) return;
    const questions = list.querySelectorAll(".bubble.user");
    const last = questions[questions.length - 1];
    if (!last) return;
    const question = last.textContent;
    // The last question and what answered it make way for the new answer (the server does the same).
    while (last.nextElementSibling) last.nextElementSibling.remove();
    last.remove();
    const body = new FormData(form);
    body.set("question", "");
    body.set("regenerate", "1");
    await send(question, body);
  }

  list.addEventListener("click", async (event) => {
    const target = event.target.closest("button, a");
    if (!target || !list.contains(target)) return;
    const answer = target.closest(".bubble.assistant");
    if (target.matches(".stop-answer")) {
      if (current) {
        current.stopped = true;
        current.controller.abort();
      }
    } else if (target.matches(".copy-answer")) {
      const text = answer.querySelector(".answer")?.dataset.markdown ?? "";
      try {
        await copy(text);
        say(answer, "Copied");
      } catch {
        say(answer, "Could not copy: select the text and copy it instead.");
      }
    } else if (target.matches(".regenerate-answer")) {
      await regenerate();
    } else if (target.matches("a.cite, ol.citations a") && panel) {
      const chunk = new URL(target.href, window.location.href).searchParams.get("chunk");
      if (!chunk || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      openPassage(chunk, target);
    }
  });

  // --- The cited passage, beside the answer (a new tab on a phone) ---

  let opener = null;
  async function openPassage(chunk, link) {
    const url = panel.dataset.url.replace(/0\/$/, chunk + "/");
    if (PHONE.matches) {
      window.open(url + "#passage-" + chunk, "_blank", "noopener"); // at the cited passage, not its neighbour
      return;
    }
    opener = link;
    panel.hidden = false;
    panelBody.setAttribute("aria-busy", "true");
    panelBody.textContent = "Loading the passage…";
    try {
      const response = await fetch(url, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" });
      if (response.status === 404) {
        panelBody.textContent = "This passage is gone: its document was deleted or re-ingested, or is no longer shared with you.";
      } else if (!response.ok) {
        panelBody.textContent = "The passage could not be loaded. Please try again.";
      } else {
        panelBody.innerHTML = await response.text(); // our own template, escaped by Django
        panelBody.querySelector("mark")?.scrollIntoView({ block: "center" });
      }
    } catch {
      panelBody.textContent = "The passage could not be loaded: check your connection.";
    } finally {
      panelBody.removeAttribute("aria-busy");
      panel.focus();
    }
  }

  function closePassage() {
    panel.hidden = true;
    panelBody.textContent = "";
    opener?.focus();
    opener = null;
  }
  document.getElementById("passage-close")?.addEventListener("click", closePassage);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && panel && !panel.hidden) closePassage();
  });

  // --- "Only in": the page lists every document; show at most a few dozen, narrowed by what is typed ---

  const documentSelect = document.getElementById("document-filter");
  if (documentSelect) {
    const search = document.getElementById("document-search");
    const more = document.getElementById("document-filter-more");
    const shownAtMost = Number(documentSelect.dataset.shown) || 50;
    const every = documentSelect.options[0];
    // Each document's option and its collection's group (when the conversation searches several), kept
    // here while the select holds only those shown.
    const entries = [...documentSelect.options].slice(1).map((option) => {
      const group = option.parentElement.tagName === "OPTGROUP" ? option.parentElement : null;
      return { option, group, text: `${option.textContent} ${group ? group.label : ""}`.toLocaleLowerCase() };
    });
    const groups = [...new Set(entries.map((entry) => entry.group).filter(Boolean))];

    function narrow() {
      const words = search.value.toLocaleLowerCase().split(/\s+/).filter(Boolean);
      const chosen = documentSelect.value;
      let matches = 0;
      const shown = entries.filter((entry) => {
        const match = words.every((word) => entry.text.includes(word));
        if (match) matches += 1;
        // The chosen document stays in the list, so that narrowing never changes what is asked about.
        return (match && matches <= shownAtMost) || (chosen !== "" && entry.option.value === chosen);
      });
      groups.forEach((group) => group.replaceChildren());
      const children = [every];
      for (const entry of shown) {
        if (entry.group) {
          if (!entry.group.childElementCount) children.push(entry.group);
          entry.group.append(entry.option);
        } else {
          children.push(entry.option);
        }
      }
      documentSelect.replaceChildren(...children);
      documentSelect.value = chosen;
      const hidden = matches - Math.min(matches, shownAtMost);
      more.hidden = !(hidden || !matches);
      more.textContent = !matches ? "No document matches." : `${hidden} more: type to narrow.`;
    }
    search.closest("label").hidden = false;
    search.addEventListener("input", narrow);
    search.addEventListener("keydown", (event) => {
      if (event.key === "Enter") event.preventDefault(); // Enter narrows; it does not send the question
    });
    narrow();
  }

  list.scrollTop = list.scrollHeight; // a reopened conversation shows its latest answer
})();

// The chat page: send the question, show the answer as it streams (server-sent events over fetch).
(function () {
  "use strict";
  const form = document.getElementById("ask-form");
  const list = document.getElementById("messages");
  const textarea = form.querySelector("textarea");
  const button = document.getElementById("ask-button");
  let busy = false;

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
      const label = c.title + (c.page ? ", page " + c.page : "");
      if (c.chunk_id) {
        const a = document.createElement("a");
        a.href = c.url;
        a.textContent = label;
        li.appendChild(a);
      } else {
        li.textContent = label + " (deleted)";
      }
      ol.appendChild(li);
    }
    return ol;
  }

  // The first answer names the conversation: show the new title, and move it to the top of the list.
  function retitle(title) {
    if (!title) return;
    const heading = document.getElementById("conversation-title");
    heading.textContent = title;
    delete heading.dataset.untitled;
    document.title = title + " · RAG chat";
    const current = document.querySelector("#conversation-list li.current");
    if (current) {
      current.querySelector("a").textContent = title;
      current.parentNode.prepend(current);
    }
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
    follow(true);

    let finished = false;
    try {
      const response = await fetch(form.action, {
        method: "POST", body, headers: { Accept: "text/event-stream" }, credentials: "same-origin",
      });
      const type = response.headers.get("Content-Type") || "";
      if (!response.ok || !type.startsWith("text/event-stream")) {
        const detail = type.startsWith("text/plain") ? (await response.text()).trim() : "";
        showError(answer, failureMessage(response.ok ? 500 : response.status, detail));
        // Over the rate limit the question was not saved: put it back, to send again later.
        if (response.status === 429 && !textarea.value) textarea.value = question;
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      const state = { buffer: "" };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        state.buffer += decoder.decode(value, { stream: true });
        const wasAtBottom = atBottom();
        for (const event of parseEvents(state)) {
          if (event.type === "token") {
            thinking.remove();
            text.textContent += event.text; // plain text while streaming; the server's HTML at the end
          } else if (event.type === "done") {
            finished = true;
            thinking.remove();
            text.classList.remove("streaming");
            text.innerHTML = event.html; // rendered and sanitised (nh3) by the server
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
        follow(wasAtBottom);
      }
      if (!finished) showError(answer, "The answer was cut off. Your question is saved; please try again.");
    } catch (error) {
      showError(answer, "The answer failed (" + error.message + "). Your question is saved; please try again.");
    } finally {
      text.classList.remove("streaming");
      answer.removeAttribute("aria-busy");
    }
  }

  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const question = textarea.value.trim();
    if (busy) return;
    if (!question) {
      textarea.focus();
      return;
    }
    busy = true;
    button.disabled = true;
    button.textContent = "Answering…";
    form.setAttribute("aria-busy", "true");
    const body = new FormData(form);
    textarea.value = "";
    try {
      await ask(question, body);
    } finally {
      busy = false;
      button.disabled = false;
      button.textContent = "Ask";
      form.removeAttribute("aria-busy");
      textarea.focus();
    }
  });

  list.scrollTop = list.scrollHeight; // a reopened conversation shows its latest answer
})();

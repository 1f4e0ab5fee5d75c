// The chat page: send the question, render the answer as it streams (server-sent events).
(function () {
  "use strict";
  const form = document.getElementById("ask-form");
  const list = document.getElementById("messages");
  const textarea = form.querySelector("textarea");

  function bubble(role) {
    const div = document.createElement("div");
    div.className = "bubble " + role;
    list.appendChild(div);
    document.getElementById("chat-empty")?.remove();
    return div;
  }

  function citationsList(citations) {
    const ol = document.createElement("ol");
    ol.className = "citations";
    for (const c of citations) {
      const li = document.createElement("li");
      li.value = c.index;
      const a = document.createElement("a");
      a.href = c.url;
      a.textContent = c.title + (c.page ? ", page " + c.page : "");
      li.appendChild(a);
      ol.appendChild(li);
    }
    return ol;
  }

  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const question = textarea.value.trim();
    if (!question) return;
    const button = form.querySelector("button");
    button.disabled = true;
    bubble("user").textContent = question;
    const answer = bubble("assistant");
    const text = document.createElement("div");
    text.className = "answer streaming";
    answer.appendChild(text);
    const body = new FormData(form);
    textarea.value = "";
    try {
      const response = await fetch(form.action, {
        method: "POST", body, headers: { Accept: "text/event-stream" },
      });
      if (!response.ok) throw new Error(await response.text() || response.statusText);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (!data) continue;
          const event = JSON.parse(data);
          if (event.type === "token") {
            text.textContent += event.text;
          } else if (event.type === "done") {
            text.classList.remove("streaming");
            text.innerHTML = event.html; // rendered and sanitised by the server
            if (event.error) {
              const p = document.createElement("p");
              p.className = "error";
              p.textContent = event.error;
              answer.appendChild(p);
            }
            if (event.citations.length) answer.appendChild(citationsList(event.citations));
          }
        }
        list.scrollTop = list.scrollHeight;
      }
    } catch (error) {
      const p = document.createElement("p");
      p.className = "error";
      p.textContent = "The answer failed: " + error.message + " Your question is saved; try again.";
      answer.appendChild(p);
    } finally {
      button.disabled = false;
      textarea.focus();
    }
  });
})();

// Behaviour every page shares, kept out of the markup: the Content-Security-Policy runs no inline
// script or event handler (onsubmit=...), so the templates only declare what they want.
(function () {
  "use strict";
  // <form data-confirm="Delete this?">: ask before submitting (a delete in the list, a conversation).
  document.addEventListener("submit", (event) => {
    const question = event.target.dataset.confirm;
    if (question && !window.confirm(question)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);
  // A passage opened from a citation is centred, not stuck to the top edge.
  document.querySelector(".chunk.highlighted")?.scrollIntoView({ block: "center" });

  // <button aria-controls="x" aria-expanded="false">: opens and closes #x (the site menu on phones,
  // the conversation list's drawer). CSS shows the toggles only where the panel is folded away.
  const drawer = document.getElementById("conversations");
  const backdrop = document.querySelector(".drawer-backdrop");
  function setOpen(toggle, open) {
    toggle.setAttribute("aria-expanded", String(open));
    const panel = document.getElementById(toggle.getAttribute("aria-controls"));
    panel.classList.toggle("open", open);
    if (panel === drawer) {
      if (backdrop) backdrop.hidden = !open;
      // While the drawer covers the page, the page behind it takes no focus or clicks.
      for (const behind of document.querySelectorAll(".topbar, .chat")) behind.inert = open;
      if (open) drawer.querySelector("a, button, input, select")?.focus();
    }
  }
  for (const toggle of document.querySelectorAll(".nav-toggle, .drawer-toggle")) {
    toggle.addEventListener("click", () => setOpen(toggle, toggle.getAttribute("aria-expanded") !== "true"));
  }
  const drawerToggle = document.querySelector(".drawer-toggle");
  function closeDrawer() {
    if (drawerToggle && drawer?.classList.contains("open")) {
      setOpen(drawerToggle, false);
      drawerToggle.focus();
    }
  }
  for (const closer of document.querySelectorAll("[data-drawer-close]")) closer.addEventListener("click", closeDrawer);
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") closeDrawer(); });
  // Widened past the phone layout (a rotated tablet): the list is a sidebar again, nothing is covered.
  window.matchMedia("(min-width: 721px)").addEventListener("change", (event) => { if (event.matches) closeDrawer(); });

  // The list's bulk delete shows once a conversation is ticked, saying how many (without script: always),
  // and so does its confirmation.
  const deleteMany = document.querySelector("button.delete-many");
  if (deleteMany) {
    const ticked = () => document.querySelectorAll('#conversation-list input[form="delete-many"]:checked').length;
    const update = () => {
      const count = ticked();
      deleteMany.hidden = count === 0;
      deleteMany.textContent = `Delete ${count} ticked`;
      const conversations = count === 1 ? "1 conversation" : `${count.toLocaleString("en")} conversations`;
      document.getElementById("delete-many").dataset.confirm = `Delete ${conversations}? This cannot be undone.`;
    };
    document.getElementById("conversation-list").addEventListener("change", update);
    update();
  }

  // The open conversation got a new title (renamed in place below, or named by its first question: chat.js
  // sends "conversation-retitled"): its item in the list says it everywhere the page shows it, in the words of
  // templates/chat/chat.html, so that the ⋯ menu neither offers the old title to save back nor names it.
  document.addEventListener("conversation-retitled", (event) => {
    const title = event.detail.title;
    const item = document.querySelector("#conversation-list li.current");
    if (!item) return;
    item.querySelector(":scope > a").textContent = title;
    item.querySelector(':scope > input[type="checkbox"]')?.setAttribute("aria-label", `Select “${title}”`);
    item.querySelector(".item-menu > summary")?.setAttribute("aria-label", `Actions for “${title}”`);
    const field = item.querySelector('.rename-item input[name="title"]');
    if (field) field.value = field.defaultValue = title;
    const remove = item.querySelector(".item-menu form[data-confirm]");
    if (remove) remove.dataset.confirm = `Delete “${title}”? This cannot be undone.`;
  });

  // Rename a conversation in place: the title becomes a field; Enter saves, Escape cancels.
  const renameForm = document.getElementById("rename-form");
  const renameButton = document.getElementById("rename-button");
  if (renameForm && renameButton) {
    const heading = document.getElementById("conversation-title");
    const field = renameForm.elements.title;
    const problem = renameForm.querySelector(".error");
    const editing = (on) => {
      renameForm.hidden = !on;
      heading.hidden = on;
      renameButton.hidden = on;
      problem.hidden = true;
      if (on) {
        field.value = "untitled" in heading.dataset ? "" : heading.textContent;
        field.focus();
        field.select();
      } else {
        renameButton.focus();
      }
    };
    renameButton.hidden = false;
    renameButton.addEventListener("click", () => editing(true));
    renameForm.querySelector("[data-rename-cancel]").addEventListener("click", () => editing(false));
    field.addEventListener("keydown", (event) => { if (event.key === "Escape") { event.stopPropagation(); editing(false); } });
    renameForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      let response, body;
      try {
        response = await fetch(renameForm.action, {
          method: "POST", body: new FormData(renameForm), headers: { Accept: "application/json" },
        });
      } catch (error) {
        body = { detail: "The server could not be reached: try again." };
      }
      if (response) body = await response.json().catch(() => ({ detail: `The conversation could not be renamed (error ${response.status}).` }));
      if (!response?.ok) {
        problem.textContent = body?.detail || "The conversation could not be renamed.";
        problem.hidden = false;
        return;
      }
      heading.textContent = body.title;
      delete heading.dataset.untitled;
      document.title = body.title + " · RAG chat";
      document.dispatchEvent(new CustomEvent("conversation-retitled", { detail: { title: body.title } }));
      editing(false);
    });
  }
})();

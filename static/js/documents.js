// The library page: drag-and-drop upload of several files, live status / progress bars, and the
// checkboxes of the bulk actions. Without JavaScript the forms still post and the page reloads; with it,
// files are sent with fetch, each new row is inserted (rendered by the server) and polled until it is
// finished, "All on this page" checks every row, and the filters apply as soon as one is changed.
// A document's own page loads it too while the document is pending: its #document-status (an element
// with data-document-id, as a row) is polled the same way, and the page reloads once the run has ended.
(function () {
  "use strict";
  const statusUrl = document.currentScript.dataset.statusUrl;
  const PENDING = ["queued", "processing"];

  // Poll the status of documents that are still queued or processing (library rows, or a document's page).
  function pendingRows() {
    return Array.from(document.querySelectorAll("[data-document-id]")).filter((row) =>
      PENDING.includes(row.dataset.status)
    );
  }

  function update(row, doc) {
    const pending = PENDING.includes(doc.status);
    if (row.hasAttribute("data-reload-when-finished") && !pending) {
      row.dataset.status = "finished"; // polled no more while the page reloads
      window.location.reload(); // its passages, chunk count and actions as the server renders them now
      return;
    }
    row.dataset.status = doc.status;
    const badge = row.querySelector(".badge");
    badge.className = "badge " + doc.status;
    badge.textContent = doc.status_label;
    const cancel = row.querySelector(".cancel-form");
    if (cancel) cancel.hidden = !pending;
    // Re-ingest as the server offers it (selectors.reingest_offered): not while pending, nor where it cannot help.
    const reingest = row.querySelector(".reingest-form");
    if (reingest) reingest.hidden = !doc.reingest_offered;
    renderProgress(row, doc);
  }

  // The row's progress (templates/documents/_progress.html): bar, "Embedding 120/900 chunks · 14% · 12 pages ·
  // about 2 min left", the chunk count once ready, and the document's message coloured by its kind.
  function renderProgress(row, doc) {
    const pending = PENDING.includes(doc.status);
    const bar = row.querySelector("progress");
    bar.value = doc.progress;
    bar.hidden = !pending;
    const text = row.querySelector(".progress-text");
    if (text) text.textContent = doc.progress_text || "";
    row.querySelector(".chunks").textContent =
      doc.status === "ready" ? doc.chunk_count + (doc.chunk_count === 1 ? " chunk" : " chunks") : "";
    const message = row.querySelector(".error");
    message.textContent = doc.error || "";
    message.className = "error message-" + (doc.message_kind || "info");
    message.dataset.kind = doc.message_kind || "info";
  }

  let timer = null;
  function schedulePoll(delay) {
    if (timer === null) timer = setTimeout(poll, delay);
  }

  async function poll() {
    timer = null;
    const rows = pendingRows();
    if (!rows.length) return; // polling starts again with the next upload
    const query = rows.map((row) => "id=" + encodeURIComponent(row.dataset.documentId)).join("&");
    try {
      const response = await fetch(statusUrl + "?" + query, { headers: { Accept: "application/json" } });
      if (response.ok) {
        const data = await response.json();
        const seen = new Set();
        for (const doc of data.documents) {
          seen.add(String(doc.id));
          const row = document.querySelector('[data-document-id="' + doc.id + '"]');
          if (row) update(row, doc);
        }
        // A document deleted meanwhile is no longer reported: stop asking about it.
        rows.filter((row) => !seen.has(row.dataset.documentId)).forEach((row) => (row.dataset.status = "gone"));
      }
    } catch (error) {
      // A missed poll is retried on the next tick; the page keeps working.
    }
    schedulePoll(1000);
  }
  schedulePoll(0);

  const form = document.getElementById("upload-form");
  if (!form) return; // a document's page: the rest is the library's

  const input = document.getElementById("file-input");
  const dropzone = document.getElementById("dropzone");
  const button = document.getElementById("upload-button");
  const results = document.getElementById("upload-results");
  const table = document.getElementById("documents-table");
  const chosen = document.getElementById("dropzone-prompt");
  const prompt = Array.from(chosen.childNodes); // "Drop files here" or "Choose files", as the pointer is

  // Drag and drop: put the dropped files into the form's input and submit it.
  ["dragenter", "dragover"].forEach((type) =>
    dropzone.addEventListener(type, (event) => {
      event.preventDefault();
      dropzone.classList.add("over");
    })
  );
  ["dragleave", "drop"].forEach((type) =>
    dropzone.addEventListener(type, () => dropzone.classList.remove("over"))
  );
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (!event.dataTransfer.files.length) return;
    input.files = event.dataTransfer.files;
    showChosen();
    form.requestSubmit();
  });

  function showChosen() {
    const names = Array.from(input.files).map((f) => f.name);
    if (names.length) chosen.textContent = names.join(", ");
    else chosen.replaceChildren(...prompt);
  }
  input.addEventListener("change", showChosen);

  // A name that is none of the user's collections creates one: say so before the upload, not after.
  const collectionInput = document.getElementById("upload-collection");
  const collectionNames = document.getElementById("collection-names");
  const collectionNote = document.getElementById("collection-note");
  function showCollectionNote() {
    const name = collectionInput.value.trim();
    const known = Array.from(collectionNames.options).some((option) => option.value === name);
    collectionNote.hidden = !name || known;
    collectionNote.textContent = collectionNote.hidden
      ? ""
      : "You have no collection named “" + name + "”: uploading creates it.";
  }
  collectionInput.addEventListener("input", showCollectionNote);
  showCollectionNote();

  // The collection an upload created joins the Collection list and the library's filter at once.
  function addCollection(collection) {
    const option = document.createElement("option");
    option.value = collection.name;
    collectionNames.appendChild(option);
    const filter = document.querySelector('#library-filters select[name="collection"]');
    if (filter) filter.appendChild(new Option(collection.name, collection.id));
    showCollectionNote();
  }

  // ok: true (green), false (red), "notice" (blue: what the upload did besides, e.g. create a collection),
  // or a message kind of the status JSON ("error", "warning", ...).
  function report(text, ok) {
    const item = document.createElement("li");
    item.className =
      ok === "notice" ? "notice"
      : ok === true || ok === "success" || ok === "info" ? "ok" : ok === "warning" ? "warning" : "error";
    item.textContent = text;
    results.appendChild(item);
  }

  function insertRow(html) {
    const body = document.createElement("tbody");
    body.innerHTML = html.trim();
    table.tBodies[0].prepend(body.firstElementChild);
    table.hidden = false;
    bulkForm.hidden = false;
    document.getElementById("library-filters").hidden = false; // hidden while the library was empty
    document.getElementById("empty-state")?.remove();
    showSelection();
  }

  // Bulk actions: the row checkboxes belong to #bulk-form (form="bulk-form"); the server asks to confirm.
  const bulkForm = document.getElementById("bulk-form");
  const selectAll = document.getElementById("select-all");
  const selectedCount = document.getElementById("selected-count");
  const boxes = () => Array.from(document.querySelectorAll('input[name="ids"][form="bulk-form"]'));
  function showSelection() {
    const all = boxes();
    const checked = all.filter((box) => box.checked).length;
    selectAll.closest("label").hidden = !all.length;
    selectAll.checked = all.length > 0 && checked === all.length;
    selectAll.indeterminate = checked > 0 && checked < all.length;
    selectedCount.textContent = checked ? checked + " selected" : "";
    bulkForm.querySelectorAll('button[name="action"]').forEach((button) => (button.disabled = !checked));
  }
  selectAll.addEventListener("change", () => {
    boxes().forEach((box) => (box.checked = selectAll.checked));
    showSelection();
  });
  table.addEventListener("change", (event) => {
    if (event.target.matches('input[name="ids"]')) showSelection();
  });
  showSelection();

  // Filters: a changed list applies at once (the search box waits for Enter or Apply).
  const filters = document.getElementById("library-filters");
  filters?.addEventListener("change", (event) => {
    if (event.target.matches("select")) filters.requestSubmit();
  });
  // Empty fields stay out of the address ("?status=&type=" says nothing).
  filters?.addEventListener("formdata", (event) => {
    for (const [key, value] of Array.from(event.formData.entries())) if (!value) event.formData.delete(key);
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    results.replaceChildren();
    if (!input.files.length) {
      report("Choose at least one file.", false);
      return;
    }
    button.disabled = true;
    button.textContent = "Uploading…";
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      const isJson = (response.headers.get("Content-Type") || "").includes("application/json");
      const data = isJson ? await response.json() : {};
      const perFile = data.results || [];
      if (data.message) report(data.message, "notice"); // "New collection “Handbok” created."
      if (data.collection && data.collection.created) addCollection(data.collection);
      // Each file's line says what became of it; the summary only when there is none (e.g. a 413 for the request).
      if (data.detail && !perFile.length) report(data.detail, false);
      else if (!isJson) report("The upload failed (HTTP " + response.status + "). Please try again.", false);
      for (const result of perFile) {
        if (result.ok) {
          insertRow(result.row_html);
          // The queue (Redis) may be down: the upload is kept and the row says when it will start.
          // An empty file is refused at once (failed): its line is an error, not a success.
          report(result.name + ": " + (result.document.error || "queued for processing."), result.document.message_kind);
        } else {
          report(result.name + ": " + result.detail, false);
        }
      }
      input.value = "";
      showChosen();
      schedulePoll(0);
    } catch (error) {
      report("The upload failed: the server could not be reached. Please try again.", false);
    } finally {
      button.disabled = false;
      button.textContent = "Upload";
    }
  });

  // Cancel: sent with fetch, the row shows the answer at once (without JavaScript the form posts).
  table.addEventListener("submit", async (event) => {
    const cancel = event.target.closest(".cancel-form");
    if (!cancel) return;
    event.preventDefault();
    const row = cancel.closest("tr[data-document-id]");
    const button = cancel.querySelector("button");
    button.disabled = true;
    results.replaceChildren();
    try {
      const response = await fetch(cancel.action, {
        method: "POST",
        body: new FormData(cancel),
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      const isJson = (response.headers.get("Content-Type") || "").includes("application/json");
      const data = isJson ? await response.json() : {};
      if (data.document) update(row, data.document);
      report(data.detail || "Cancelling failed (HTTP " + response.status + "). Please try again.", response.ok);
    } catch (error) {
      report("Cancelling failed: the server could not be reached. Please try again.", false);
    } finally {
      button.disabled = false;
    }
  });
})();

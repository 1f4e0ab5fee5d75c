// The library page: drag-and-drop upload and live status / progress bars.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  const input = document.getElementById("file-input");
  const dropzone = document.getElementById("dropzone");
  const statusUrl = document.currentScript.dataset.statusUrl;

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
    form.requestSubmit();
  });
  input.addEventListener("change", () => {
    const names = Array.from(input.files).map((f) => f.name);
    dropzone.querySelector("strong").textContent = names.length ? names.join(", ") : "Drop files here";
  });
  form.addEventListener("submit", () => {
    document.getElementById("upload-button").disabled = true;
    document.getElementById("upload-button").textContent = "Uploading…";
  });

  // Poll the status of documents that are still queued or processing.
  function pendingRows() {
    return Array.from(document.querySelectorAll("tr[data-document-id]")).filter(
      (row) => row.dataset.status === "queued" || row.dataset.status === "processing"
    );
  }

  function update(row, doc) {
    row.dataset.status = doc.status;
    const badge = row.querySelector(".badge");
    badge.className = "badge " + doc.status;
    badge.textContent = doc.status_label;
    const bar = row.querySelector("progress");
    bar.value = doc.progress;
    bar.hidden = doc.status === "ready" || doc.status === "failed";
    row.querySelector(".chunks").textContent =
      doc.status === "ready" ? doc.chunk_count + (doc.chunk_count === 1 ? " chunk" : " chunks") : "";
    row.querySelector(".error").textContent = doc.error || "";
  }

  async function poll() {
    const rows = pendingRows();
    if (!rows.length) return;
    const query = rows.map((row) => "id=" + encodeURIComponent(row.dataset.documentId)).join("&");
    try {
      const response = await fetch(statusUrl + "?" + query, { headers: { Accept: "application/json" } });
      if (response.ok) {
        const data = await response.json();
        for (const doc of data.documents) {
          const row = document.querySelector('tr[data-document-id="' + doc.id + '"]');
          if (row) update(row, doc);
        }
      }
    } catch (error) {
      // A missed poll is retried on the next tick; the page keeps working.
    }
    setTimeout(poll, 1000);
  }
  poll();
})();

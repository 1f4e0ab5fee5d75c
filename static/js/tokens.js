// The new API token's page: copy the secret with one tap (it is shown only once).
(function () {
  "use strict";
  const secret = document.getElementById("raw-token");
  const button = document.getElementById("copy-token");
  if (!secret || !button) return;
  secret.addEventListener("focus", () => secret.select());
  button.hidden = false;
  button.addEventListener("click", async () => {
    secret.select();
    try {
      await navigator.clipboard.writeText(secret.value);
      button.textContent = "Copied";
    } catch (error) {
      button.textContent = "Select and copy it";  // no clipboard access: the text is selected
    }
  });
})();

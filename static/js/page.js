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
})();

// DCP web plane: small enhancements only; every page works without this file.
"use strict";

// Copy buttons: <button data-copy="element-id">.
document.addEventListener("click", (ev) => {
  const button = ev.target.closest("button[data-copy]");
  if (!button) return;
  const text = document.getElementById(button.dataset.copy)?.textContent ?? "";
  navigator.clipboard?.writeText(text.trim()).then(() => { button.textContent = "✓"; });
});

// Live status: reload the page when a job's status (or a provider's state) changes.
function poll(el, field, current) {
  const url = el.dataset.statusUrl;
  let tries = 0;
  const timer = setInterval(async () => {
    if (++tries > 600) { clearInterval(timer); return; }
    try {
      const r = await fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } });
      if (!r.ok) return;
      const body = await r.json();
      if (body[field] !== current) { clearInterval(timer); location.reload(); }
    } catch (_) { /* offline for a moment: try again next tick */ }
  }, 2000);
}
const job = document.getElementById("job-status");
if (job && ["queued", "assigned", "running"].includes(job.dataset.status)) poll(job, "status", job.dataset.status);
const onboarding = document.getElementById("onboarding");
if (onboarding) poll(onboarding, "last_heartbeat_at", null);

// Live reserve estimate on the submit form, from the server (the one place the rule lives).
const form = document.getElementById("submit-form");
if (form) {
  const out = document.getElementById("estimate");
  const names = ["gpu_type", "gpu_count", "max_duration_seconds", "priority", "min_vram_gb"];
  let pending = null;
  const update = () => {
    clearTimeout(pending);
    pending = setTimeout(async () => {
      const q = new URLSearchParams();
      for (const n of names) q.set(n, form.elements[n]?.value ?? "");
      try {
        const r = await fetch("/renter/jobs/estimate?" + q, { credentials: "same-origin" });
        if (!r.ok) return;
        const e = await r.json();
        const p = out.querySelector("p") ?? out.appendChild(document.createElement("p"));
        p.className = "";
        p.textContent = (out.dataset.template ?? "{reserve} SAR").replace("{reserve}", e.reserve_sar).replace("{rate}", e.rate_sar);
      } catch (_) { /* keep the last estimate */ }
    }, 300);
  };
  for (const n of names) form.elements[n]?.addEventListener("input", update);
  if (!out.querySelector("#shortfall")) update();
}

// IBAN: say before submitting when it fails the check (asked of the server, which holds the
// rule and checks it again on submit).
const iban = document.querySelector("input[data-iban]");
if (iban) {
  iban.addEventListener("change", async () => {
    const v = iban.value.replace(/\s+/g, "").toUpperCase();
    try {
      const r = await fetch("/provider/iban?" + new URLSearchParams({ iban: v }), { credentials: "same-origin" });
      const body = await r.json();
      iban.setCustomValidity(body.valid ? "" : body.message);
      iban.reportValidity();
    } catch (_) { /* the server checks on submit anyway */ }
  });
}

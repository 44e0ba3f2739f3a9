// The Knowledge page: uploads files one by one as raw bodies (with the CSRF header), then
// reloads while any document is queued or indexing, so its progress shows.
(() => {
  const form = document.getElementById("kb-upload");
  const status = document.getElementById("kb-upload-status");
  const csrf = document.body.dataset.csrf || "";

  async function upload(event) {
    event.preventDefault();
    const collection = form.elements.collection.value.trim();
    const files = Array.from(form.elements.files.files);
    const maxBytes = Number(form.dataset.maxMb) * 1024 * 1024;
    const problems = [];
    for (const [index, file] of files.entries()) {
      status.textContent = `Uploading ${index + 1} of ${files.length}: ${file.name}…`;
      if (file.size > maxBytes) {
        problems.push(`${file.name}: larger than ${form.dataset.maxMb} MB`);
        continue;
      }
      const query = new URLSearchParams({ collection, name: file.name });
      const response = await fetch(`/admin/knowledge/upload?${query}`, {
        method: "POST", body: file, credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf, "Content-Type": "application/octet-stream",
                   Accept: "application/json" },
      });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        problems.push(`${file.name}: ${body?.error?.message || response.status}`);
      }
    }
    if (problems.length) {
      status.textContent = problems.join("; ");
      setTimeout(() => window.location.reload(), 4000);
    } else {
      window.location.assign("/admin/knowledge?notice=kb-queued");
    }
  }

  form?.addEventListener("submit", upload);
  const busy = document.querySelector('[data-status="queued"], [data-status="indexing"]');
  if (busy) setTimeout(() => window.location.reload(), 2000);
})();

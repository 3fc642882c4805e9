// supportbot staff console: keeps the inbox and an open transcript live by polling, and sends staff
// replies without reloading the page. Everything works without it; it only saves reloads.
(() => {
  "use strict";

  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const INBOX_POLL_MS = 4000;
  const TRANSCRIPT_POLL_MS = 2000;

  // A signed-out or expired session turns polls into redirects to the sign-in page: follow them.
  function signedOut(response) {
    return response.status === 401 || (response.redirected && new URL(response.url).pathname === "/console/login");
  }

  function localTimes(root) {
    for (const element of root.querySelectorAll("time[datetime]")) {
      const moment = new Date(element.getAttribute("datetime"));
      if (!Number.isNaN(moment.getTime())) element.title = moment.toLocaleString();
    }
  }

  function poll(every, step) {
    let running = false;
    const tick = async () => {
      if (running || document.hidden) return;
      running = true;
      try {
        await step();
      } catch (error) {
        // Network hiccup: the next tick tries again.
      } finally {
        running = false;
      }
    };
    setInterval(tick, every);
    return tick;
  }

  // Inbox: re-render the rows (waiting-for-a-human first) with the page's own filters.
  const rows = document.getElementById("inbox-rows");
  if (rows) {
    poll(INBOX_POLL_MS, async () => {
      const response = await fetch(rows.dataset.live, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (signedOut(response)) return window.location.assign("/console/login");
      if (!response.ok) return;
      const html = await response.text();
      if (html !== rows.dataset.last) {
        rows.dataset.last = html;
        rows.innerHTML = html;
        localTimes(rows);
      }
    });
  }

  // Transcript: append new turns, and say when someone else changed the conversation's state.
  const page = document.getElementById("conversation");
  if (page) {
    const transcript = document.getElementById("transcript");
    const banner = document.getElementById("live-banner");
    const pollNow = poll(TRANSCRIPT_POLL_MS, async () => {
      const url = `${page.dataset.live}?after=${encodeURIComponent(page.dataset.lastId || "0")}`;
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (signedOut(response)) return window.location.assign("/console/login");
      if (!response.ok) return;
      const update = await response.json();
      if (update.html.trim()) {
        const holder = document.createElement("template");
        holder.innerHTML = update.html;
        for (const item of holder.content.querySelectorAll("li.msg")) {
          if (!document.getElementById(item.id)) transcript.append(item);
        }
        localTimes(transcript);
      }
      page.dataset.lastId = String(update.last_id);
      const owner = update.owner_id === null ? "" : String(update.owner_id);
      if (update.status !== page.dataset.status || owner !== page.dataset.owner) banner.hidden = false;
    });

    const form = document.getElementById("reply-form");
    if (form) {
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const box = form.elements.namedItem("text");
        const text = box.value.trim();
        if (!text) return;
        const button = form.querySelector("button[type=submit]");
        button.disabled = true;
        try {
          const response = await fetch(form.dataset.api, {
            method: "POST",
            credentials: "same-origin",
            headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
            body: JSON.stringify({ text }),
          });
          if (signedOut(response)) return window.location.assign("/console/login");
          if (!response.ok) {
            const body = await response.json().catch(() => ({}));
            window.alert(body?.error?.message || `The reply was not sent (${response.status}).`);
            return;
          }
          box.value = "";
          await pollNow();
        } finally {
          button.disabled = false;
        }
      });
    }
  }

  localTimes(document);
})();

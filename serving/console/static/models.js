// supportbot console, models page: while a retraining run is queued or running, polls the admin API
// every 2 s and redraws its progress and loss plot; the buttons call the admin API with the CSRF token.
(() => {
  "use strict";

  const root = document.getElementById("models-page");
  if (!root) return;
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const errorBox = document.getElementById("models-error");
  const POLL_MS = 2000;
  const SVG = "http://www.w3.org/2000/svg";
  // The plot's drawing area inside its 640 x 240 viewBox.
  const PLOT = { width: 640, height: 240, left: 52, right: 14, top: 14, bottom: 30 };

  const going = (status) => status === "queued" || status === "running";

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    errorBox.scrollIntoView({ block: "nearest" });
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const whole = Math.max(Math.round(seconds), 0);
    const minutes = Math.floor(whole / 60);
    return minutes ? `${minutes} min ${whole % 60} s` : `${whole} s`;
  }

  // Same wording as the runs table's server-rendered summary (templates/_runs.html).
  function summary(run) {
    const p = run.progress || {};
    let text = p.stage || "waiting to start";
    if (p.total) text += ` · step ${p.step ?? 0}/${p.total}`;
    if (p.loss !== null && p.loss !== undefined) text += ` · loss ${p.loss}`;
    if (p.stage === "preference" && p.preference) text += ` · DPO step ${p.preference.step}/${p.preference.total}`;
    return text;
  }

  function element(name, attributes, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Training loss as a line and validation loss as dots, on shared axes from step 0 to the last step.
  function drawPlot(svg, progress) {
    const curve = progress.curve || [];
    const validation = progress.validation || [];
    for (const child of [...svg.children]) if (child.tagName !== "title") child.remove();
    svg.dataset.points = String(curve.length);
    svg.dataset.validation = String(validation.length);
    const all = [...curve, ...validation];
    if (!all.length) {
      svg.append(element("text", { class: "plot-empty", x: PLOT.width / 2, y: PLOT.height / 2, "text-anchor": "middle" }, "No loss measured yet."));
      return;
    }
    const lastStep = Math.max(progress.total || 0, ...all.map(([step]) => step), 1);
    let low = Math.min(...all.map(([, loss]) => loss));
    let high = Math.max(...all.map(([, loss]) => loss));
    const pad = (high - low) * 0.08 || Math.abs(high) * 0.05 || 0.1;
    low -= pad;
    high += pad;
    const right = PLOT.width - PLOT.right;
    const bottom = PLOT.height - PLOT.bottom;
    const x = (step) => PLOT.left + (step / lastStep) * (right - PLOT.left);
    const y = (loss) => bottom - ((loss - low) / (high - low)) * (bottom - PLOT.top);
    const at = ([step, loss]) => `${x(step).toFixed(1)},${y(loss).toFixed(1)}`;

    svg.append(element("path", { class: "axis", d: `M${PLOT.left},${PLOT.top} V${bottom} H${right}` }));
    for (const value of [high - pad, (low + high) / 2, low + pad]) {
      svg.append(element("line", { class: "grid", x1: PLOT.left, x2: right, y1: y(value), y2: y(value) }));
      svg.append(element("text", { class: "tick", x: PLOT.left - 6, y: y(value) + 4, "text-anchor": "end" }, value.toFixed(2)));
    }
    svg.append(element("text", { class: "tick", x: PLOT.left, y: bottom + 18, "text-anchor": "middle" }, "0"));
    svg.append(element("text", { class: "tick", x: right, y: bottom + 18, "text-anchor": "end" }, `step ${lastStep}`));
    if (curve.length) {
      svg.append(element("polyline", { class: "train", points: curve.map(at).join(" ") }));
      const last = curve[curve.length - 1];
      svg.append(element("circle", { class: "train-last", cx: x(last[0]), cy: y(last[1]), r: 3 }));
    }
    for (const point of validation) {
      const dot = element("circle", { class: "validation", cx: x(point[0]), cy: y(point[1]), r: 4.5 });
      dot.append(element("title", {}, `step ${point[0]}: validation loss ${point[1]}`));
      svg.append(dot);
    }
  }

  function setField(scope, name, text) {
    for (const node of scope.querySelectorAll(`[data-field="${name}"]`)) node.textContent = text;
  }

  function drawRun(scope, run) {
    const p = run.progress || {};
    if (scope.tagName === "TR") {
      if (going(run.status)) setField(scope, "summary", summary(run));
      return;
    }
    setField(scope, "stage", p.stage || (run.status === "queued" ? "waiting to start" : "–"));
    setField(scope, "steps", `${p.step ?? 0} / ${p.total || "–"}`);
    setField(scope, "loss", p.loss ?? "–");
    setField(scope, "eta", going(run.status) && p.stage === "training" ? duration(p.eta_s) : "–");
    const bar = scope.querySelector('progress[data-field="bar"]');
    if (bar) {
      bar.max = p.total || 1;
      bar.value = p.step || 0;
    }
    const svg = scope.querySelector("svg.loss-plot");
    if (svg) drawPlot(svg, p);
  }

  // One poll: redraw what changed; a run that started, stopped or finished reloads the page, which then
  // shows its report and buttons. Says whether a run is still going.
  async function refresh() {
    const response = await fetch(root.dataset.poll, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401) {
      window.location.assign(`/console/login?next=${encodeURIComponent(window.location.pathname)}`);
      return false;
    }
    if (!response.ok) return true;
    const body = await response.json();
    const runs = Array.isArray(body) ? body : [body];
    let changed = false;
    for (const run of runs) {
      const shown = root.querySelectorAll(`[data-run="${run.id}"]`);
      if (!shown.length && Array.isArray(body)) changed = true;
      for (const scope of shown) {
        if (scope.dataset.status !== run.status) changed = true;
        // The run's plan is written as it starts: the page shows it once it exists.
        const planned = (run.progress || {}).plan;
        if (planned && scope.tagName !== "TR" && !scope.querySelector('[data-field="plan"]')) changed = true;
        drawRun(scope, run);
      }
    }
    if (changed) {
      window.location.reload();
      return false;
    }
    return runs.some((run) => going(run.status));
  }

  async function poll() {
    let again = true;
    try {
      if (!document.hidden) again = await refresh();
    } catch (error) {
      // Network hiccup: the next tick tries again.
    }
    if (again) window.setTimeout(poll, POLL_MS);
  }

  root.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button || button.disabled) return;
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    errorBox.hidden = true;
    button.disabled = true;
    try {
      const response = await fetch(button.dataset.url, {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRF-Token": csrf },
      });
      if (response.status === 401) {
        window.location.assign(`/console/login?next=${encodeURIComponent(window.location.pathname)}`);
        return;
      }
      if (!response.ok) {
        const problem = await response.json().catch(() => ({}));
        showError(problem?.error?.message || `That did not work (${response.status}).`);
        button.disabled = false;
        return;
      }
      window.location.assign(`${window.location.pathname}?notice=${encodeURIComponent(button.dataset.notice)}`);
    } catch (error) {
      showError("The server could not be reached; please try again.");
      button.disabled = false;
    }
  });

  poll();
})();

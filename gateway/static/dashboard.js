// The operators' dashboard: polls GET /dashboard/data every few seconds and redraws the
// numbers, two small bar charts (SVG) and the lists. Plain JS, no library, no inline script.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const root = document.getElementById("dashboard");
  const source = root.dataset.source;
  const every = Math.max(1, Number(root.dataset.pollSeconds) || 5) * 1000;
  const $ = (id) => document.getElementById(id);

  /** The same wording as the server's human_size: 1536 -> "1.5 KiB". */
  function humanSize(bytes) {
    let size = Number(bytes) || 0;
    for (const unit of ["bytes", "KiB", "MiB", "GiB", "TiB"]) {
      if (size < 1024 || unit === "TiB") {
        if (unit === "bytes") return size === 1 ? "1 byte" : `${Math.floor(size)} bytes`;
        return `${size.toFixed(1).replace(/\.0$/, "")} ${unit}`;
      }
      size /= 1024;
    }
    return "";
  }

  const number = (n) => Number(n || 0).toLocaleString("en");
  const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

  function text(id, value) {
    const element = $(id);
    if (element.textContent !== value) element.textContent = value;
  }

  function svg(name, attributes, children = []) {
    const element = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
    for (const child of children) element.append(child);
    return element;
  }

  /** Bars for one value per minute, scaled to the largest; each bar says its value on hover. */
  function drawBars(chart, scale, minutes, value, describe) {
    const box = chart.viewBox.baseVal;
    const height = box.height - 2;
    const most = Math.max(1, ...minutes.map(value));
    const slot = box.width / minutes.length;
    const bars = minutes.map((minute, i) => {
      const v = value(minute);
      const h = v ? Math.max(2, (v / most) * height) : 0;
      return svg("rect", {
        class: v ? "bar" : "bar empty",
        x: (i * slot + 1).toFixed(1), y: (box.height - h).toFixed(1),
        width: Math.max(1, slot - 2).toFixed(1), height: h.toFixed(1),
        "data-value": v,
      }, [svg("title", {}, [`${clock(minute.minute)}: ${describe(v)}`])]);
    });
    const base = svg("line", { class: "baseline", x1: 0, x2: box.width, y1: box.height - 0.5, y2: box.height - 0.5 });
    chart.replaceChildren(base, ...bars);
    text(scale, `top of the scale: ${describe(most)}`);
  }

  function drawRefusals(refusals) {
    const list = $("refusals");
    const most = Math.max(1, ...refusals.map((r) => r.count));
    $("refusals-empty").hidden = refusals.length > 0;
    list.replaceChildren(...refusals.map(({ reason, count }) => {
      const item = document.createElement("li");
      item.dataset.reason = reason;
      const name = document.createElement("code");
      name.className = "reason";
      name.textContent = reason;
      const meter = document.createElement("progress");
      meter.max = most;
      meter.value = count;
      meter.setAttribute("aria-label", `${reason}: ${count}`);
      const value = document.createElement("span");
      value.className = "count";
      value.textContent = number(count);
      item.append(name, meter, value);
      return item;
    }));
  }

  function drawRecentRefusals(refusals) {
    $("recent-refusals-empty").hidden = refusals.length > 0;
    $("recent-refusals-table").hidden = refusals.length === 0;
    $("recent-refusals").replaceChildren(...refusals.map((r) => {
      const row = document.createElement("tr");
      row.dataset.code = r.code;
      const cells = [new Date(r.refused_at).toLocaleString(), r.original_name,
        r.size === null ? "–" : humanSize(r.size), r.code, r.rule || "gateway", r.user_id || "–"];
      row.append(...cells.map((value) => {
        const cell = document.createElement("td");
        cell.textContent = value;
        return cell;
      }));
      return row;
    }));
  }

  function drawServices(services) {
    $("services").replaceChildren(...Object.entries(services).map(([name, state]) => {
      const item = document.createElement("li");
      item.dataset.service = name;
      item.dataset.state = state;
      const label = document.createElement("span");
      label.className = "service-name";
      label.textContent = name;
      const badge = document.createElement("span");
      badge.className = `badge ${state === "SERVING" ? "ok" : "down"}`;
      badge.textContent = state === "SERVING" ? "up" : state.toLowerCase().replace("_", " ");
      item.append(label, badge);
      return item;
    }));
  }

  function render(data) {
    text("window-uploads", number(data.window.uploads));
    text("window-bytes", humanSize(data.window.bytes));
    text("stored-files", `${number(data.stored.files)} file${data.stored.files === 1 ? "" : "s"}`);
    text("stored-bytes", humanSize(data.stored.bytes));
    text("outcome-stored", number(data.outcomes.stored));
    text("outcome-refused", number(data.outcomes.refused));
    text("outcome-error", number(data.outcomes.error));
    text("since", `since ${clock(data.since)}`);
    text("thumbnails-pending", number(data.thumbnails_pending));
    drawBars($("per-minute-chart"), "per-minute-max", data.per_minute, (m) => m.uploads,
      (v) => `${number(v)} upload${v === 1 ? "" : "s"}`);
    drawBars($("bytes-chart"), "bytes-max", data.per_minute, (m) => m.bytes, humanSize);
    drawRefusals(data.refusals);
    drawRecentRefusals(data.recent_refusals);
    drawServices(data.services);
    text("updated", `Updated ${new Date(data.generated_at).toLocaleTimeString()}`);
  }

  async function refresh() {
    const error = $("dashboard-error");
    try {
      const response = await fetch(source, { headers: { Accept: "application/json" }, cache: "no-store" });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(body.error || `The server answered ${response.status}.`);
      render(body);
      error.hidden = true;
    } catch (exc) {
      error.textContent = `Could not refresh the numbers: ${exc.message}`;
      error.hidden = false;
    } finally {
      root.setAttribute("aria-busy", "false");
      setTimeout(refresh, every);
    }
  }

  refresh();
})();

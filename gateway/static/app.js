// The upload page: drop zone, upload queue with progress, result cards and the
// list of recent uploads. Plain modern JS, no build step, no external assets.
// Every rule the page checks (allowed types, size limit) comes from GET /policy.
// Large files go through tus (resumable: pause, resume, survive a reload or a dropped
// network) with tus-js-client, which the gateway serves from node_modules at /vendor/.
"use strict";

(() => {
  // ---------------------------------------------------------------- settings

  /** Files sent at the same time. */
  const CONCURRENCY = 2;
  /** Delays (ms) between re-reads of a record whose thumbnail is not ready yet. */
  const THUMBNAIL_BACKOFF = [700, 1500, 3000, 6000, 12000, 24000];
  /** Records per page of "Recent uploads" (the API allows up to 200). */
  const RECENT_PAGE = 20;
  const RECENT_MAX = 200;
  /** Delays (ms) before tus-js-client tries a failed request again (network, 5xx, 409, 423). */
  const TUS_RETRY_DELAYS = [0, 1000, 3000, 5000, 10000];
  const TUS_VERSION = "1.0.0";

  // ------------------------------------------------------------------ helpers

  const $ = (selector, root = document) => root.querySelector(selector);
  const slot = (root, name) => root.querySelector(`[data-slot="${name}"]`);
  const action = (root, name) => root.querySelector(`[data-action="${name}"]`);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  /**
   * With accounts on, the signed-in page carries its session's CSRF token; every request that
   * changes something sends it back (the server refuses cookie-only writes without it).
   */
  const CSRF_TOKEN = ($('meta[name="csrf-token"]') || {}).content || "";
  const CSRF_HEADERS = CSRF_TOKEN ? { "X-CSRF-Token": CSRF_TOKEN } : {};

  /** The same wording as the server's human_size: 1536 -> "1.5 KiB", 52428800 -> "50 MiB". */
  function humanSize(bytes) {
    let size = Number(bytes) || 0;
    for (const unit of ["bytes", "KiB", "MiB", "GiB", "TiB"]) {
      if (size < 1024 || unit === "TiB") {
        if (unit === "bytes") {
          const whole = Math.floor(size);
          return whole === 1 ? "1 byte" : `${whole} bytes`;
        }
        return `${size.toFixed(1).replace(/\.0$/, "")} ${unit}`;
      }
      size /= 1024;
    }
    return "";
  }

  function humanDuration(seconds) {
    const s = Math.max(1, Math.ceil(seconds));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
    const h = Math.floor(m / 60);
    return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
  }

  const thisYear = new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "numeric", minute: "2-digit",
  });
  const otherYear = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  function humanDate(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    return (date.getFullYear() === new Date().getFullYear() ? thisYear : otherYear).format(date);
  }

  /** The extension the server will see (gateway/ingest/names.py: last dot, alphanumeric, <= 16). */
  function extensionOf(name) {
    const trimmed = String(name).trim().replace(/[\s.]+$/, "");
    const dot = trimmed.lastIndexOf(".");
    if (dot < 0) return "";
    const ext = trimmed.slice(dot + 1);
    return ext.length <= 16 && /^[\p{L}\p{N}]+$/u.test(ext) ? ext.toLowerCase() : "";
  }

  /** A coarse kind, only to colour the placeholder tile. */
  function kindOf(type, ext) {
    type = type || "";
    if (type.startsWith("image/") || type.startsWith("video/")) return "image";
    if (type.startsWith("text/") || ["txt", "csv"].includes(ext)) return "text";
    if (type === "application/pdf" || ext === "pdf") return "pdf";
    if (/zip|rar|7z|tar|gzip/.test(type) || ["zip", "rar", "7z", "tar", "gz"].includes(ext)) return "archive";
    return "doc";
  }

  function absoluteUrl(path) {
    return new URL(path, window.location.href).href;
  }

  /** Turns a failed response into {message, code, status}: the server's own sentence when it sent one. */
  function errorFromBody(status, statusText, text) {
    if (status === 401 && CSRF_TOKEN) {
      // This page was signed in: the session has ended (signed out elsewhere, expired, revoked).
      return { message: "You have been signed out. Reload the page to sign in again.", code: "signed_out", status };
    }
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
    if (body && typeof body.error === "string" && body.error) {
      return { message: body.error, code: body.code || "", status };
    }
    const what = status ? `${status}${statusText ? " " + statusText : ""}` : "no answer";
    return { message: `The server answered ${what}. Please try again.`, code: "", status };
  }

  async function requestJSON(url, options = {}) {
    let response;
    try {
      const headers = { ...CSRF_HEADERS, ...(options.headers || {}) };
      response = await fetch(url, { credentials: "same-origin", ...options, headers });
    } catch {
      const error = new Error("The server could not be reached. Check your connection and try again.");
      error.status = 0;
      throw error;
    }
    const text = await response.text();
    if (!response.ok) {
      const info = errorFromBody(response.status, response.statusText, text);
      const error = new Error(info.message);
      Object.assign(error, info);
      throw error;
    }
    return text ? JSON.parse(text) : null;
  }

  // ------------------------------------------------------------ announcements

  const politeRegion = $("#announce-polite");
  const alertRegion = $("#announce-alert");

  /** Screen-reader announcements; the last few are kept so none overwrites another. */
  function announce(message, { urgent = false } = {}) {
    const region = urgent ? alertRegion : politeRegion;
    const line = document.createElement("p");
    line.textContent = message;
    region.append(line);
    while (region.childElementCount > 6) region.firstElementChild.remove();
  }

  // ------------------------------------------------------------------- policy

  const input = $("#file-input");
  const policySummary = $("#policy-summary");
  const policyError = $("#policy-error");
  let policy = null;
  let policyUnavailable = false;
  const policyWaiters = [];

  function applyPolicy(p) {
    policy = p;
    policyUnavailable = false;
    input.accept = p.accept || "";
    const types = (p.extensions || []).join(", ");
    const parts = [`Up to ${p.max_file_size_formatted} per file`];
    if (p.max_image_dimension) parts.push(`images up to ${p.max_image_dimension} px per side`);
    policySummary.textContent = `${parts.join(", ")}. Allowed types: ${types}.`;
    policyError.hidden = true;
    policyWaiters.splice(0).forEach((resolve) => resolve(p));
  }

  async function loadPolicy() {
    for (let attempt = 0; ; attempt += 1) {
      try {
        applyPolicy(await requestJSON("/policy"));
        return;
      } catch (error) {
        const wait = Math.min(30, 2 ** attempt);
        policySummary.textContent = "The upload rules could not be loaded.";
        policyError.textContent =
          `${error.message} Files you add are still checked by the server. Retrying in ${wait} s…`;
        policyError.hidden = false;
        policyUnavailable = true;
        policyWaiters.splice(0).forEach((resolve) => resolve(null));
        await sleep(wait * 1000);
      }
    }
  }

  /** The policy, or null when it cannot be had right now (then the server alone decides). */
  function currentPolicy() {
    if (policy || policyUnavailable) return Promise.resolve(policy);
    return new Promise((resolve) => policyWaiters.push(resolve));
  }

  /** Why the policy refuses this file before any byte is sent, or "" when it may go. */
  function refusalFor(file, p) {
    if (!p) return "";
    const ext = extensionOf(file.name);
    const allowed = (p.extensions || []).join(", ");
    if (!ext) return `The file name has no extension; allowed types are: ${allowed}.`;
    if (!(p.extensions || []).includes(ext)) {
      return `Files of type .${ext} are not allowed; allowed types are: ${allowed}.`;
    }
    if (file.size > p.max_file_size) {
      return `The file is ${humanSize(file.size)}, larger than the ${p.max_file_size_formatted} limit.`;
    }
    return "";
  }

  // ---------------------------------------------------------------- transport

  /**
   * Sends one file as multipart/form-data to POST /upload.
   * callbacks: onProgress(loaded, total), onSent(), onSuccess(record), onError({message, code, status}).
   * Returns a handle with abort(). A resumable (tus) transport can offer the same
   * interface plus pause() and resume().
   */
  function uploadMultipart(file, callbacks) {
    const xhr = new XMLHttpRequest();
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.open("POST", "/upload");
    if (CSRF_TOKEN) xhr.setRequestHeader("X-CSRF-Token", CSRF_TOKEN);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) callbacks.onProgress(event.loaded, event.total);
    });
    xhr.upload.addEventListener("load", () => callbacks.onSent());
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        let body;
        try {
          body = JSON.parse(xhr.responseText);
        } catch {
          callbacks.onError({ message: "The server's answer could not be read.", code: "", status: xhr.status });
          return;
        }
        callbacks.onSuccess(Array.isArray(body.files) ? body.files[0] : body);
      } else {
        callbacks.onError(errorFromBody(xhr.status, xhr.statusText, xhr.responseText));
      }
    });
    xhr.addEventListener("error", () => callbacks.onError({
      message: "The connection was lost before the upload finished. Check your connection and try again.",
      code: "network", status: 0,
    }));
    xhr.send(form);
    return { abort: () => xhr.abort() };
  }

  /** tus-js-client (window.tus), when /vendor/tus.min.js loaded and this browser can use it. */
  function tusLibrary() {
    const lib = window.tus;
    return lib && lib.isSupported && typeof lib.Upload === "function" ? lib : null;
  }

  /** The policy's tus settings, or null when files cannot go through tus right now. */
  function tusSettings() {
    const t = policy && policy.tus;
    if (!tusLibrary() || !t || typeof t.endpoint !== "string" || !(Number(t.chunk_size) > 0)) return null;
    return { endpoint: t.endpoint, chunkSize: Number(t.chunk_size) };
  }

  /**
   * The transport for a file: files larger than one tus chunk go through tus, so they can be
   * paused and resumed; smaller ones in one multipart request, which is quicker for them.
   */
  function transportFor(file) {
    const t = tusSettings();
    return t && file.size > t.chunkSize ? uploadTus : uploadMultipart;
  }

  /** A failed tus upload as {message, code, status}: the server's own sentence when it sent one. */
  function tusErrorInfo(error) {
    const res = error && error.originalResponse;
    if (res) {
      const xhr = typeof res.getUnderlyingObject === "function" ? res.getUnderlyingObject() : null;
      return errorFromBody(res.getStatus(), (xhr && xhr.statusText) || "", res.getBody());
    }
    if (error && error.originalRequest) {
      return {
        message: "The connection was lost before the upload finished. Check your connection and try again.",
        code: "network", status: 0,
      };
    }
    // No request involved: the browser could not read the file.
    return {
      message: "The file could not be read; it may have been moved or changed since it was chosen. Choose it again.",
      code: "file_unreadable", status: -1,
    };
  }

  /** GET /files/<id>, tried again a few times when the server cannot be reached or fails. */
  async function fetchRecord(id) {
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await requestJSON(`/files/${encodeURIComponent(id)}`);
      } catch (error) {
        if (attempt >= 3 || (error.status >= 400 && error.status < 500)) throw error;
        await sleep(500 * 2 ** attempt);
      }
    }
  }

  /**
   * Sends one file with tus (POST /tus/, then PATCHes of policy.tus.chunk_size bytes).
   * The same callbacks as uploadMultipart, plus onStatus(text) for "trying again" and the like,
   * and onResumed(uploadUrl) when it carries on with an upload an earlier page left unfinished.
   * Returns a handle with abort() (which also deletes the upload on the server), pause() and resume().
   */
  function uploadTus(file, callbacks) {
    const { endpoint, chunkSize } = tusSettings();
    let fileId = null;
    let stopped = false; // paused or cancelled
    let sentAll = false;
    let onlineWait = null;

    const stopWaitingForNetwork = () => {
      if (onlineWait) window.removeEventListener("online", onlineWait);
      onlineWait = null;
    };

    const upload = new window.tus.Upload(file, {
      endpoint,
      chunkSize,
      retryDelays: TUS_RETRY_DELAYS,
      headers: CSRF_HEADERS,
      metadata: { filename: file.name, filetype: file.type || "application/octet-stream" },
      removeFingerprintOnSuccess: true,
      onShouldRetry(error) {
        // tus-js-client's own rule (no 4xx but 409 and 423; not while offline), saying so on the page.
        const status = error.originalResponse ? error.originalResponse.getStatus() : 0;
        const retry = (status < 400 || status >= 500 || status === 409 || status === 423) && navigator.onLine !== false;
        if (retry && !stopped) {
          if (status === 0) callbacks.onStatus("The connection was interrupted; trying again…");
          else if (status >= 500) callbacks.onStatus(`The server answered ${status}; trying again…`);
        }
        return retry;
      },
      onAfterResponse(_req, res) {
        // The last PATCH of a finished upload (or a HEAD on it) names the stored file.
        const id = res.getHeader("Upload-File-Id");
        if (id) fileId = id;
      },
      onProgress(sent, total) {
        if (stopped) return;
        callbacks.onProgress(sent, total);
        if (sent < total) {
          sentAll = false;
        } else if (!sentAll) {
          sentAll = true;
          callbacks.onSent();
        }
      },
      onSuccess(payload) {
        const last = payload && payload.lastResponse;
        const id = fileId || (last && last.getHeader("Upload-File-Id"));
        if (!id) {
          callbacks.onError({
            message: "The upload finished, but the server did not say which file it stored. Please try again.",
            code: "", status: 502,
          });
          return;
        }
        fetchRecord(id).then(callbacks.onSuccess, (error) => callbacks.onError({
          message: `The file was stored, but its details could not be loaded: ${error.message}`,
          code: error.code || "", status: -1,
        }));
      },
      onError(error) {
        if (stopped) return;
        const info = tusErrorInfo(error);
        if (info.status === 0 && navigator.onLine === false) {
          // Offline: carry on by itself as soon as the browser is back online.
          callbacks.onStatus("Offline. The upload continues when the connection is back.");
          stopWaitingForNetwork();
          onlineWait = () => {
            stopWaitingForNetwork();
            if (!stopped) upload.start();
          };
          window.addEventListener("online", onlineWait);
          return;
        }
        callbacks.onError(info);
      },
    });

    // An upload of this very file that an earlier page (or a failed try) left unfinished
    // carries on where the server is; the newest one if there are several.
    const ready = upload.findPreviousUploads().then((previous) => {
      const usable = previous.filter((entry) => entry.uploadUrl);
      usable.sort((a, b) => String(b.creationTime || "").localeCompare(String(a.creationTime || "")));
      if (usable.length) {
        upload.resumeFromPreviousUpload(usable[0]);
        if (callbacks.onResumed) callbacks.onResumed(usable[0].uploadUrl);
      }
    }).catch(() => {});
    const go = () => ready.then(() => {
      if (!stopped) upload.start();
    });
    go();

    return {
      pause() {
        stopped = true;
        stopWaitingForNetwork();
        upload.abort(); // keeps the upload's URL: start() asks the server for its offset
      },
      resume() {
        stopped = false;
        sentAll = false;
        go();
      },
      abort() {
        stopped = true;
        stopWaitingForNetwork();
        upload.abort(true).catch(() => {}); // also deletes what the server has
      },
      get url() {
        return upload.url;
      },
    };
  }

  /** Upload speed over the last few seconds. */
  class SpeedMeter {
    constructor() {
      this.samples = [];
    }
    add(loaded) {
      const now = performance.now();
      this.samples.push([now, loaded]);
      while (this.samples.length > 2 && now - this.samples[0][0] > 4000) this.samples.shift();
    }
    /** Bytes per second, or 0 while there is too little to go on. */
    rate() {
      if (this.samples.length < 2) return 0;
      const [t0, b0] = this.samples[0];
      const [t1, b1] = this.samples[this.samples.length - 1];
      return t1 - t0 < 250 ? 0 : ((b1 - b0) * 1000) / (t1 - t0);
    }
  }

  // -------------------------------------------------------------------- queue

  const queueList = $("#queue");
  const queueHead = $("#queue-head");
  const queueSummary = $("#queue-summary");
  const clearFinished = $("#clear-finished");
  const itemTemplate = $("#tpl-item");

  const items = [];
  const waiting = [];
  let running = 0;
  let nextItemId = 1;

  const BADGES = {
    queued: "Waiting",
    uploading: "Uploading",
    processing: "Checking",
    paused: "Paused",
    done: "Uploaded",
    failed: "Not uploaded",
    cancelled: "Cancelled",
    deleted: "Deleted",
  };

  function setState(item, state) {
    item.state = state;
    item.el.dataset.state = state;
    slot(item.el, "badge").textContent = BADGES[state];
    updateActions(item);
    slot(item.el, "progress-row").hidden = !["queued", "uploading", "processing", "paused"].includes(state);
    updateSummary();
  }

  function updateActions(item) {
    const state = item.state;
    // Once every byte is sent the server is judging the file: cancelling then would leave
    // it unclear whether it was stored, so the button goes away.
    action(item.el, "cancel").hidden = !(state === "queued" || state === "uploading" || state === "paused");
    action(item.el, "pause").hidden = !(state === "uploading" && item.handle && item.handle.pause);
    action(item.el, "resume").hidden = state !== "paused";
    action(item.el, "dismiss").hidden = !(state === "failed" || state === "cancelled");
    action(item.el, "retry").hidden = !(state === "cancelled" || (state === "failed" && item.retryable));
  }

  function updateSummary() {
    const visible = items.filter((item) => item.el.isConnected);
    queueHead.hidden = visible.length === 0;
    const count = (...states) => visible.filter((item) => states.includes(item.state)).length;
    const done = count("done", "deleted");
    const failed = count("failed");
    const sending = count("uploading", "processing");
    const paused = count("paused");
    const queued = count("queued");
    const parts = [`${done} of ${visible.length} uploaded`];
    if (sending) parts.push(`${sending} uploading`);
    if (paused) parts.push(`${paused} paused`);
    if (queued) parts.push(`${queued} waiting`);
    if (failed) parts.push(`${failed} not uploaded`);
    queueSummary.textContent = parts.join(" · ");
    clearFinished.hidden = visible.length === sending + paused + queued;
  }

  function createItem(file) {
    const el = itemTemplate.content.firstElementChild.cloneNode(true);
    const id = `item-${nextItemId++}`;
    const item = { id, file, el, state: "queued", record: null, handle: null, retryable: false, holdsSlot: false };
    el.id = id;
    const name = slot(el, "name");
    name.id = `${id}-name`;
    name.textContent = file.name;
    slot(el, "meta").textContent = humanSize(file.size);
    const ext = extensionOf(file.name);
    placeholder(slot(el, "thumb"), file.type, ext);
    const progress = slot(el, "progress");
    const progressText = slot(el, "progress-text");
    progressText.id = `${id}-progress`;
    progress.setAttribute("aria-labelledby", name.id);
    progress.setAttribute("aria-describedby", progressText.id);
    const error = slot(el, "error");
    error.id = `${id}-error`;
    action(el, "retry").setAttribute("aria-describedby", error.id);
    action(el, "pause").setAttribute("aria-describedby", progressText.id);
    action(el, "resume").setAttribute("aria-describedby", progressText.id);
    action(el, "dismiss").setAttribute("aria-describedby", error.id);
    action(el, "cancel").setAttribute("aria-label", `Cancel upload of ${file.name}`);
    action(el, "pause").setAttribute("aria-label", `Pause upload of ${file.name}`);
    action(el, "resume").setAttribute("aria-label", `Resume upload of ${file.name}`);
    action(el, "retry").setAttribute("aria-label", `Try uploading ${file.name} again`);
    action(el, "dismiss").setAttribute("aria-label", `Remove ${file.name} from this list`);
    action(el, "cancel").addEventListener("click", () => cancel(item));
    action(el, "pause").addEventListener("click", () => pause(item));
    action(el, "resume").addEventListener("click", () => resume(item));
    action(el, "retry").addEventListener("click", () => retry(item));
    action(el, "dismiss").addEventListener("click", () => dismiss(item));
    action(el, "copy").addEventListener("click", () => copyLink(item));
    action(el, "share").addEventListener("click", () => shareLink(item.record, action(el, "share"), el));
    items.push(item);
    return item;
  }

  async function addFiles(files) {
    const list = Array.from(files || []);
    if (!list.length) return;
    const added = list.map(createItem);
    queueList.append(...added.map((item) => item.el));
    added.forEach((item) => setState(item, "queued"));
    announce(list.length === 1 ? `Added ${list[0].name}.` : `Added ${list.length} files.`);
    const p = await currentPolicy();
    for (const item of added) {
      if (item.state !== "queued") continue; // cancelled meanwhile
      const refusal = refusalFor(item.file, p);
      if (refusal) {
        fail(item, { message: refusal, code: "refused_by_page", status: 0 }, false);
      } else {
        waiting.push(item);
      }
    }
    pump();
  }

  function pump() {
    while (running < CONCURRENCY && waiting.length) {
      const item = waiting.shift();
      if (item.state === "queued") start(item);
    }
  }

  /** Gives back the item's place among the CONCURRENCY uploads (once). */
  function releaseSlot(item) {
    if (!item.holdsSlot) return;
    item.holdsSlot = false;
    running -= 1;
  }

  function start(item) {
    running += 1;
    item.holdsSlot = true;
    item.finished = false;
    item.meter = new SpeedMeter();
    item.loaded = 0;
    item.total = item.file.size;
    const progress = slot(item.el, "progress");
    const progressText = slot(item.el, "progress-text");
    let halfwayAnnounced = false;
    const began = performance.now();
    progress.value = 0;
    progressText.textContent = "Starting…";
    setState(item, "uploading");
    announce(`Uploading ${item.file.name}, ${humanSize(item.file.size)}.`);

    const settle = () => {
      if (item.finished) return false;
      item.finished = true;
      releaseSlot(item);
      item.handle = null;
      pump();
      return true;
    };

    const upload = transportFor(item.file);
    item.handle = upload(item.file, {
      onProgress(loaded, total) {
        // A tus upload whose last request failed after all its bytes went out sends them again.
        if (item.state === "processing" && loaded < total) setState(item, "uploading");
        if (item.state !== "uploading") return;
        const meter = item.meter;
        item.loaded = loaded;
        item.total = total;
        meter.add(loaded);
        const percent = total ? Math.min(100, Math.floor((loaded / total) * 100)) : 0;
        progress.value = percent;
        const rate = meter.rate();
        const parts = [`${percent}%`];
        if (rate > 0) {
          parts.push(`${humanSize(rate)}/s`);
          if (loaded < total) parts.push(`${humanDuration((total - loaded) / rate)} left`);
        }
        progressText.textContent = parts.join(" · ");
        if (!halfwayAnnounced && percent >= 50 && percent < 100 && performance.now() - began > 2000) {
          halfwayAnnounced = true;
          announce(`${item.file.name}: half uploaded.`);
        }
      },
      onStatus(text) {
        if (item.state === "uploading") progressText.textContent = text;
      },
      onResumed(uploadUrl) {
        forgetUnfinished(uploadUrl);
        if (item.state === "uploading") progressText.textContent = "Continuing where the upload stopped…";
      },
      onSent() {
        if (item.state !== "uploading") return;
        progress.value = 100;
        progressText.textContent = "100% · checking the file…";
        setState(item, "processing");
      },
      onSuccess(record) {
        if (!settle()) return;
        progress.value = 100;
        complete(item, record);
      },
      onError(error) {
        if (!settle()) return;
        const retryable = error.status === 0 || error.status >= 500 || error.status === 408 || error.status === 429;
        fail(item, error, retryable);
      },
    });
    updateActions(item); // Pause, when this transport can
  }

  function complete(item, record) {
    item.record = record;
    const el = item.el;
    el.dataset.fileId = record.id;
    slot(el, "name").textContent = record.original_name;
    slot(el, "meta").hidden = true;
    slot(el, "size").textContent = record.size_formatted;
    slot(el, "type").textContent = record.type;
    slot(el, "sha256").textContent = record.sha256;
    if (record.width && record.height) {
      slot(el, "dimensions").textContent = `${record.width} × ${record.height} px`;
      slot(el, "dimensions-row").hidden = false;
    }
    if (record.expires_at) {
      slot(el, "expires").textContent = humanDate(record.expires_at);
      slot(el, "expires-row").hidden = false;
    }
    slot(el, "details").hidden = false;
    const download = slot(el, "download");
    download.href = record.download_url;
    download.download = record.original_name;
    download.hidden = false;
    download.setAttribute("aria-label", `Download ${record.original_name}`);
    const copy = action(el, "copy");
    copy.hidden = false;
    copy.setAttribute("aria-label", `Copy link to ${record.original_name}`);
    const share = action(el, "share");
    share.hidden = false;
    share.setAttribute("aria-label", `Make a share link for ${record.original_name}`);
    fillThumb(slot(el, "thumb"), record, `Preview of ${record.original_name}`);
    setState(item, "done");
    announce(`${record.original_name} uploaded, ${record.size_formatted}.`);
    if (previewExpected(record) && !record.thumbnail_url) watchThumbnail(record.id);
    refreshRecent();
  }

  function fail(item, error, retryable) {
    item.retryable = retryable;
    const box = slot(item.el, "error");
    box.textContent = error.message;
    box.hidden = false;
    setState(item, "failed");
    announce(`${item.file.name} was not uploaded: ${error.message}`, { urgent: true });
  }

  function cancel(item) {
    const index = waiting.indexOf(item);
    if (index >= 0) waiting.splice(index, 1);
    if (item.handle) item.handle.abort();
    if (item.state === "uploading" || item.state === "paused") {
      item.finished = true;
      releaseSlot(item);
      item.handle = null;
    }
    setState(item, "cancelled");
    announce(`Upload of ${item.file.name} cancelled.`);
    action(item.el, "retry").focus();
    pump();
  }

  /** Stops sending a tus upload; the server keeps what it has, and Resume carries on from there.
   * A paused upload gives its place to the next file in the queue. */
  function pause(item) {
    if (item.state !== "uploading" || !item.handle || !item.handle.pause) return;
    item.handle.pause();
    releaseSlot(item);
    setState(item, "paused");
    const percent = item.total ? Math.min(99, Math.floor((item.loaded / item.total) * 100)) : 0;
    slot(item.el, "progress-text").textContent =
      `Paused at ${percent}% · ${humanSize(item.loaded)} of ${humanSize(item.total)} sent`;
    announce(`Upload of ${item.file.name} paused.`);
    action(item.el, "resume").focus();
    pump();
  }

  function resume(item) {
    if (item.state !== "paused" || !item.handle) return;
    // An explicit resume goes now, even if that makes one more than CONCURRENCY for a while.
    running += 1;
    item.holdsSlot = true;
    item.meter = new SpeedMeter();
    setState(item, "uploading");
    slot(item.el, "progress-text").textContent = "Resuming…";
    item.handle.resume();
    announce(`Resuming upload of ${item.file.name}.`);
    action(item.el, "pause").focus();
  }

  function retry(item) {
    slot(item.el, "error").hidden = true;
    slot(item.el, "error").textContent = "";
    const refusal = refusalFor(item.file, policy);
    if (refusal) {
      fail(item, { message: refusal, code: "refused_by_page", status: 0 }, false);
      return;
    }
    setState(item, "queued");
    slot(item.el, "progress").value = 0;
    slot(item.el, "progress-text").textContent = "Waiting…";
    action(item.el, "cancel").focus();
    waiting.push(item);
    pump();
  }

  function dismiss(item) {
    const position = items.filter((i) => i.el.isConnected).indexOf(item);
    item.el.remove();
    updateSummary();
    focusAfterRemoval(queueList, position, $("#browse"));
  }

  clearFinished.addEventListener("click", () => {
    for (const item of items) {
      if (["done", "deleted", "failed", "cancelled"].includes(item.state)) item.el.remove();
    }
    updateSummary();
    $("#browse").focus();
  });

  /** After a list item is removed, focus the same control of its neighbour (or fallback), so
   * keyboard users stay where they were. */
  function focusAfterRemoval(list, position, fallback, selector = "button:not([hidden]):not([disabled])") {
    const rest = Array.from(list.children).filter((child) => !child.hidden);
    const next = rest[Math.min(position, rest.length - 1)];
    const target = next && next.querySelector(selector);
    (target || fallback).focus();
  }

  window.addEventListener("beforeunload", (event) => {
    if (items.some((item) => ["queued", "uploading", "processing", "paused"].includes(item.state))) {
      event.preventDefault();
      event.returnValue = "";
    }
  });

  // --------------------------------------------------------------- thumbnails

  /**
   * Whether a record without a thumbnail may still get one (the thumbnail service was
   * slow or down): images, PDFs and videos are previewed; the rest are shown as a tile.
   * Only decides whether to look again: a wrong guess costs a few re-reads.
   */
  function previewExpected(record) {
    const type = record.type || "";
    return Boolean(record.is_image) || type === "application/pdf" || type.startsWith("video/");
  }

  function placeholder(container, type, ext, pending = false) {
    const tile = document.createElement("span");
    tile.className = "thumb-ext";
    tile.textContent = (ext || "file").slice(0, 4).toUpperCase();
    container.dataset.kind = kindOf(type, ext);
    container.classList.toggle("pending", pending);
    container.replaceChildren(tile);
  }

  function fillThumb(container, record, alt) {
    const ext = extensionOf(record.original_name);
    if (!record.thumbnail_url) {
      placeholder(container, record.type, ext, previewExpected(record));
      return;
    }
    const img = document.createElement("img");
    img.alt = alt;
    img.decoding = "async";
    img.addEventListener("error", () => placeholder(container, record.type, ext), { once: true });
    img.src = record.thumbnail_url;
    container.classList.remove("pending");
    container.dataset.kind = "image";
    container.replaceChildren(img);
  }

  const watching = new Set();

  /** The thumbnail service may be late: re-read the record with backoff until it has one. */
  async function watchThumbnail(id) {
    if (watching.has(id)) return;
    watching.add(id);
    try {
      for (const delay of THUMBNAIL_BACKOFF) {
        await sleep(delay);
        let record;
        try {
          record = await requestJSON(`/files/${encodeURIComponent(id)}`);
        } catch (error) {
          if (error.status === 404) return;
          continue;
        }
        if (record.thumbnail_url) {
          showThumbnail(record);
          return;
        }
      }
      // Still none: stop showing it as pending.
      for (const container of thumbContainersFor(id)) container.classList.remove("pending");
    } finally {
      watching.delete(id);
    }
  }

  function thumbContainersFor(id) {
    return document.querySelectorAll(`[data-file-id="${CSS.escape(id)}"] [data-slot="thumb"]`);
  }

  function showThumbnail(record) {
    for (const item of items) {
      if (item.record && item.record.id === record.id) {
        item.record = record;
        if (item.state === "done") fillThumb(slot(item.el, "thumb"), record, `Preview of ${record.original_name}`);
      }
    }
    const recent = recentById.get(record.id);
    if (recent) fillThumb(slot(recent, "thumb"), record, "");
  }

  // ---------------------------------------------------------------- copy link

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        return true;
      } catch {
        // fall through to the old way
      }
    }
    const active = document.activeElement;
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    area.remove();
    if (active instanceof HTMLElement) active.focus();
    return ok;
  }

  async function copyLink(item) {
    const button = action(item.el, "copy");
    const url = absoluteUrl(item.record.download_url);
    if (await copyText(url)) {
      button.textContent = "Copied";
      button.classList.add("copied");
      announce("Link copied to the clipboard.");
      clearTimeout(item.copyTimer);
      item.copyTimer = setTimeout(() => {
        button.textContent = "Copy link";
        button.classList.remove("copied");
      }, 2000);
    } else {
      window.prompt("Copy this link:", url);
    }
  }

  /**
   * One click: ask the server for a signed, expiring link that works without signing in, copy it,
   * and show it (with its expiry) under the file, so it can also be selected by hand.
   */
  async function shareLink(record, button, container) {
    button.disabled = true;
    const out = slot(container, "share");
    try {
      const link = await requestJSON(`/files/${encodeURIComponent(record.id)}/share`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
      });
      slot(out, "share-url").value = link.url;
      slot(out, "share-expires").textContent = `Works without signing in until ${humanDate(link.expires_at)}.`;
      out.hidden = false;
      const copied = await copyText(link.url);
      button.textContent = copied ? "Link copied" : "Share link";
      announce(copied ? "Share link copied to the clipboard." : "Share link made; copy it from the box.");
      if (!copied) slot(out, "share-url").select();
    } catch (error) {
      slot(out, "share-url").value = "";
      slot(out, "share-expires").textContent = `No share link: ${error.message}`;
      out.hidden = false;
      announce(`No share link: ${error.message}`, { urgent: true });
    } finally {
      button.disabled = false;
    }
  }

  // ------------------------------------------------------------ recent uploads

  const recentList = $("#recent-list");
  const recentEmpty = $("#recent-empty");
  const recentError = $("#recent-error");
  const recentMore = $("#recent-more");
  const recentTemplate = $("#tpl-recent");
  const recentById = new Map();
  let recentCursor = null;
  let recentRequest = 0;

  function recentItem(record) {
    let li = recentById.get(record.id);
    if (!li) {
      li = recentTemplate.content.firstElementChild.cloneNode(true);
      li.dataset.fileId = record.id;
      action(li, "delete").addEventListener("click", () => deleteFile(li));
      action(li, "share").addEventListener("click", () => shareLink(li.record, action(li, "share"), li));
      recentById.set(record.id, li);
    }
    li.record = record;
    const link = slot(li, "link");
    link.textContent = record.original_name;
    link.href = record.download_url;
    link.title = record.original_name;
    slot(li, "size").textContent = record.size_formatted;
    const date = slot(li, "date");
    date.dateTime = record.uploaded_at;
    date.textContent = humanDate(record.uploaded_at);
    action(li, "delete").setAttribute("aria-label", `Delete ${record.original_name}`);
    action(li, "share").setAttribute("aria-label", `Make a share link for ${record.original_name}`);
    const thumb = slot(li, "thumb");
    const img = thumb.querySelector("img");
    if (!img || !record.thumbnail_url || !img.src.endsWith(record.thumbnail_url)) fillThumb(thumb, record, "");
    if (previewExpected(record) && !record.thumbnail_url) watchThumbnail(record.id);
    return li;
  }

  /** Puts the list's children in this order, moving as little as possible (focus stays put). */
  function reconcile(list, nodes) {
    const keep = new Set(nodes);
    for (const child of Array.from(list.children)) if (!keep.has(child)) child.remove();
    nodes.forEach((node, index) => {
      if (list.children[index] !== node) list.insertBefore(node, list.children[index] || null);
    });
  }

  async function refreshRecent({ more = false } = {}) {
    const ticket = ++recentRequest;
    const shown = recentList.childElementCount;
    const limit = more ? RECENT_PAGE : Math.min(RECENT_MAX, Math.max(RECENT_PAGE, shown));
    let url = `/files?limit=${limit}`;
    if (more && recentCursor) url += `&cursor=${encodeURIComponent(recentCursor)}`;
    recentList.setAttribute("aria-busy", "true");
    try {
      const page = await requestJSON(url);
      if (ticket !== recentRequest) return;
      const fresh = (page.files || []).map(recentItem);
      const nodes = more ? [...Array.from(recentList.children), ...fresh.filter((n) => !n.isConnected)] : fresh;
      for (const [id, li] of recentById) if (!nodes.includes(li)) recentById.delete(id);
      reconcile(recentList, nodes);
      recentCursor = page.next_cursor || null;
      recentError.hidden = true;
    } catch (error) {
      if (ticket !== recentRequest) return;
      recentError.textContent = `Recent uploads could not be loaded: ${error.message}`;
      recentError.hidden = false;
    } finally {
      if (ticket === recentRequest) {
        recentList.setAttribute("aria-busy", "false");
        recentEmpty.hidden = recentList.childElementCount > 0 || !recentError.hidden;
        recentMore.hidden = !recentCursor;
      }
    }
  }

  async function deleteFile(li) {
    const record = li.record;
    const button = action(li, "delete");
    button.disabled = true;
    button.textContent = "Deleting…";
    try {
      await requestJSON(`/files/${encodeURIComponent(record.id)}`, { method: "DELETE" });
    } catch (error) {
      if (error.status !== 404) {
        button.disabled = false;
        button.textContent = "Delete";
        recentError.textContent = `${record.original_name} was not deleted: ${error.message}`;
        recentError.hidden = false;
        announce(`${record.original_name} was not deleted: ${error.message}`, { urgent: true });
        button.focus();
        return;
      }
    }
    const position = Array.from(recentList.children).indexOf(li);
    li.remove();
    recentById.delete(record.id);
    recentEmpty.hidden = recentList.childElementCount > 0;
    focusAfterRemoval(recentList, position, $("#recent-title"), '[data-action="delete"]:not([disabled])');
    for (const item of items) {
      if (item.record && item.record.id === record.id && item.state === "done") {
        action(item.el, "copy").hidden = true;
        action(item.el, "share").hidden = true;
        slot(item.el, "share").hidden = true;
        slot(item.el, "download").hidden = true;
        placeholder(slot(item.el, "thumb"), record.type, extensionOf(record.original_name));
        setState(item, "deleted");
      }
    }
    announce(`Deleted ${record.original_name}.`);
  }

  $("#recent-refresh").addEventListener("click", () => refreshRecent());
  recentMore.addEventListener("click", () => refreshRecent({ more: true }));

  // ------------------------------------------------------ unfinished uploads

  const unfinishedBox = $("#unfinished");
  const unfinishedText = $("#unfinished-text");
  const unfinishedList = $("#unfinished-list");

  function updateUnfinished() {
    const count = unfinishedList.childElementCount;
    unfinishedBox.hidden = count === 0;
    unfinishedText.textContent = count === 1
      ? "An upload did not finish. Choose the same file again to continue where it stopped:"
      : "Some uploads did not finish. Choose the same files again to continue where they stopped:";
  }

  function forgetUnfinished(uploadUrl) {
    for (const li of Array.from(unfinishedList.children)) {
      if (li.dataset.uploadUrl === uploadUrl) li.remove();
    }
    updateUnfinished();
  }

  /** Lists the tus uploads an earlier visit left unfinished (tus-js-client keeps their URLs in
   * localStorage); ones the server no longer has are forgotten. */
  async function showUnfinished() {
    const lib = tusLibrary();
    const storage = lib && lib.defaultOptions && lib.defaultOptions.urlStorage;
    if (!storage || typeof storage.findAllUploads !== "function") return;
    let entries;
    try {
      entries = await storage.findAllUploads();
    } catch {
      return;
    }
    for (const entry of entries) {
      if (!entry.uploadUrl) continue;
      let response;
      try {
        response = await fetch(entry.uploadUrl, {
          method: "HEAD", headers: { "Tus-Resumable": TUS_VERSION }, credentials: "same-origin", cache: "no-store",
        });
      } catch {
        continue;
      }
      if (response.status === 404 || response.status === 410) {
        storage.removeUpload(entry.urlStorageKey).catch(() => {});
        continue;
      }
      const offset = Number(response.headers.get("Upload-Offset"));
      const length = Number(response.headers.get("Upload-Length"));
      if (!response.ok || !(offset < length)) continue;
      // One this page has taken up again meanwhile is not "unfinished".
      if (items.some((item) => item.handle && item.handle.url === entry.uploadUrl)) continue;
      const name = (entry.metadata && entry.metadata.filename) || "A file";
      const li = document.createElement("li");
      li.dataset.uploadUrl = entry.uploadUrl;
      li.textContent = `${name}: ${humanSize(offset)} of ${humanSize(length)} sent`;
      unfinishedList.append(li);
    }
    updateUnfinished();
  }

  // ------------------------------------------------------- picking and dropping

  const dropzone = $("#dropzone");
  const browse = $("#browse");

  browse.addEventListener("click", () => input.click());
  dropzone.addEventListener("click", (event) => {
    if (event.target === dropzone || !event.target.closest("button, a, input")) input.click();
  });
  input.addEventListener("change", () => {
    addFiles(input.files);
    input.value = "";
  });

  const carriesFiles = (event) =>
    Boolean(event.dataTransfer) && Array.from(event.dataTransfer.types || []).includes("Files");
  let dragDepth = 0;

  function setDragging(on) {
    dropzone.dataset.state = on ? "dragging" : "idle";
    document.body.classList.toggle("dragging", on);
  }

  document.addEventListener("dragenter", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    dragDepth += 1;
    setDragging(true);
  });
  document.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("dragleave", (event) => {
    if (!carriesFiles(event)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) setDragging(false);
  });
  document.addEventListener("drop", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    dragDepth = 0;
    setDragging(false);
    filesFromDrop(event.dataTransfer).then(addFiles);
  });

  /** The dropped files; folders are walked (as Uppy does). */
  async function filesFromDrop(dataTransfer) {
    const dropped = [];
    for (const item of Array.from(dataTransfer.items || [])) {
      if (item.kind !== "file") continue;
      const entry = typeof item.webkitGetAsEntry === "function" ? item.webkitGetAsEntry() : null;
      dropped.push({ entry, file: item.getAsFile() });
    }
    if (!dropped.some(({ entry }) => entry && entry.isDirectory)) return Array.from(dataTransfer.files || []);
    const files = [];
    for (const { entry, file } of dropped) {
      if (entry && entry.isDirectory) await walkDirectory(entry, files);
      else if (file) files.push(file);
    }
    return files;
  }

  async function walkDirectory(directory, out) {
    const reader = directory.createReader();
    for (;;) {
      const entries = await new Promise((resolve, reject) => reader.readEntries(resolve, reject)).catch(() => []);
      if (!entries.length) return;
      for (const entry of entries) {
        if (entry.isDirectory) await walkDirectory(entry, out);
        else if (entry.isFile) out.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
      }
    }
  }

  // Pasting files (a screenshot from the clipboard) uploads them too.
  document.addEventListener("paste", (event) => {
    const files = event.clipboardData && event.clipboardData.files;
    if (files && files.length) {
      event.preventDefault();
      addFiles(files);
    }
  });

  // -------------------------------------------------------------------- start

  loadPolicy();
  refreshRecent();
  showUnfinished();
})();

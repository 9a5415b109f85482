// Airside console: every action is an API call (docs/api.md); the API decides, the console
// only hides what the caller's role cannot do. No framework and no build step: plain ES
// modules served by Airside itself (docs/console.md says why). Untrusted text is only ever
// set with textContent, never parsed as HTML.

const API = "/api/v1";
const state = { who: null, csrf: sessionStorage.getItem("airside.csrf") };
let stream = null;
let timer = null; // the live wall's camera refresh

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code;
  }
}

async function api(path, { method = "GET", json, form, accept } = {}) {
  const headers = {};
  if (accept) headers.Accept = accept;
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  if (form !== undefined) body = form;
  const res = await fetch(API + path, { method, headers, body, credentials: "same-origin" });
  if (res.status === 401 && path !== "/session") { signedOut("Your session ended: sign in again."); }
  if (!res.ok) {
    let problem = {};
    try { problem = await res.json(); } catch { /* not JSON */ }
    throw new ApiError(res.status, problem);
  }
  const type = res.headers.get("content-type") || "";
  return type.includes("json") ? res.json() : res.text();
}

const can = (action) => state.who && (state.who.actions.includes("*") || state.who.actions.includes(action));
const isAdmin = () => state.who && state.who.role === "admin";

const PAGES = [
  { id: "wall", title: "Live wall", show: () => can("event.list") || can("camera.list"), render: wall },
  { id: "review", title: "Review queue", show: () => can("review.list"), render: reviewQueue },
  { id: "enrol", title: "Enrolment desk", show: () => can("enrol") || isAdmin(), render: enrolDesk },
  { id: "check", title: "Check a face", show: () => can("verify"), render: checkFace },
  { id: "subjects", title: "Subjects and rights", show: () => isAdmin() || can("consent.withdraw"), render: subjects },
  { id: "governance", title: "Governance", show: () => can("report.governance") || can("audit.verify"), render: governance },
  { id: "cameras", title: "Cameras and scenes", show: () => isAdmin(), render: camerasPage },
];

function status(node, text, ok = false) {
  node.textContent = text;
  node.className = ok ? "ok" : "error";
}

function signedOut(message = "") {
  if (stream) { stream.close(); stream = null; }
  state.who = null;
  state.csrf = null;
  sessionStorage.removeItem("airside.csrf");
  document.getElementById("nav").hidden = true;
  document.getElementById("page").hidden = true;
  document.getElementById("who").replaceChildren();
  document.getElementById("signin").hidden = false;
  document.getElementById("signin-error").textContent = message;
}

function signedIn(who) {
  state.who = who;
  document.getElementById("signin").hidden = true;
  const nav = document.getElementById("nav");
  nav.replaceChildren(...PAGES.filter((p) => p.show()).map((p) => el("a", { href: `#${p.id}`, id: `nav-${p.id}`, text: p.title })));
  nav.hidden = false;
  document.getElementById("who").replaceChildren(
    el("span", { text: `${who.principal} (${who.role})` }),
    el("button", { class: "secondary", id: "signout", onclick: signOut, text: "Sign out" }),
  );
  route();
}

async function signOut() {
  try { await api("/session", { method: "DELETE" }); } catch { /* ended already */ }
  signedOut("Signed out.");
}

function route() {
  if (!state.who) return;
  if (stream) { stream.close(); stream = null; }
  if (timer) { clearInterval(timer); timer = null; }
  const visible = PAGES.filter((p) => p.show());
  const want = location.hash.slice(1);
  const page = visible.find((p) => p.id === want) || visible[0];
  for (const a of document.querySelectorAll("#nav a")) a.removeAttribute("aria-current");
  const main = document.getElementById("page");
  main.hidden = false;
  if (!page) { main.replaceChildren(el("p", { text: "Your role has no console pages." })); return; }
  document.getElementById(`nav-${page.id}`).setAttribute("aria-current", "page");
  const heading = el("h2", { tabindex: "-1", text: page.title });
  main.replaceChildren(heading);
  page.render(main);
  document.title = `${page.title} · Airside`;
}

// ------------------------------------------------------------------------ live wall

function wall(main) {
  const cams = el("div", { class: "card" }, el("h3", { text: "Cameras" }));
  const feed = el("ul", { class: "feed", id: "feed", "aria-live": "polite", "aria-label": "Events" });
  const camFilter = el("input", { id: "filter-camera", placeholder: "all cameras" });
  const typeFilter = el("select", { id: "filter-type" },
    ["", "identity", "watchlist_hit", "intrusion", "loitering", "crowding", "running", "fall", "abandoned_object", "stream_lost", "stream_restored"]
      .map((t) => el("option", { value: t, text: t || "all types" })));
  const apply = el("button", { text: "Apply filter", onclick: () => listen() });
  main.append(el("div", { class: "grid" }, cams,
    el("div", { class: "card" }, el("h3", { text: "Events" }),
      el("div", {}, el("label", { for: "filter-camera", text: "Camera " }), camFilter, " ",
        el("label", { for: "filter-type", text: "Type " }), typeFilter, " ", apply),
      feed)));
  if (can("camera.list")) {
    loadCameras(cams);
    timer = setInterval(() => loadCameras(cams), 2000);
  }
  function listen() {
    if (stream) stream.close();
    feed.replaceChildren();
    const q = new URLSearchParams();
    if (camFilter.value) q.set("camera", camFilter.value);
    if (typeFilter.value) q.set("type", typeFilter.value);
    stream = new EventSource(`${API}/events/stream?${q}`);
    stream.onmessage = (m) => feed.prepend(eventItem(JSON.parse(m.data)));
  }
  if (can("event.list")) listen();
}

async function loadCameras(card) {
  const holder = card.querySelector("table") || card.querySelector("p.error");
  try {
    const { items } = await api("/cameras");
    const rows = items.map((c) => el("tr", { "data-camera": c.name },
      el("td", { text: c.name }), el("td", {}, el("span", { class: `tag ${c.state}`, text: c.state })),
      el("td", { text: c.fps }), el("td", { text: c.frames_dropped }), el("td", { text: c.people ?? 0 })));
    const table = el("table", { id: "cameras" }, el("thead", {}, el("tr", {}, ...["camera", "state", "fps", "dropped", "people"].map((h) => el("th", { text: h })))), el("tbody", {}, rows));
    if (holder) holder.replaceWith(table); else card.append(table);
  } catch (e) {
    const p = el("p", { class: "error", text: e.message });
    if (holder) holder.replaceWith(p); else card.append(p);
  }
}

function eventItem(ev) {
  const what = ev.subject ? `${ev.subject} in ${ev.gallery} (score ${ev.score?.toFixed(3)})` : (ev.zone || ev.detail?.line || "");
  const li = el("li", { "data-type": ev.type, "data-id": ev.id },
    el("span", { class: `tag ${ev.type}`, text: ev.type }),
    el("span", { text: `${ev.camera} · ${what} · ${ev.created_at}` }));
  if (ev.review_case) li.append(el("a", { href: "#review", text: `review case ${ev.review_case}` }));
  if (ev.crop && can("event.crop")) li.append(el("img", { src: `${API}/events/${ev.id}/evidence`, alt: `evidence of event ${ev.id} (heads blurred where no match)` }));
  return li;
}

// ---------------------------------------------------------------------- review queue

async function reviewQueue(main) {
  const list = el("div", { class: "grid", id: "cases" });
  const note = el("p", { role: "status" });
  main.append(el("p", { text: "A watchlist hit is actionable only after two different reviewers confirm it. Opening a case's evidence is recorded." }), note, list);
  try {
    const [{ items }, hits] = await Promise.all([
      api("/review?status=open"),
      can("event.list") ? api("/events?type=watchlist_hit&limit=200") : Promise.resolve({ items: [] }),
    ]);
    if (!items.length) { note.textContent = "No open cases."; return; }
    for (const c of items) list.append(caseCard(c, hits.items.find((e) => e.review_case === c.id)));
  } catch (e) { status(note, e.message); }
}

function caseCard(c, hit) {
  const out = el("p", { role: "status" });
  const votes = el("ul", {}, c.votes.map((v) => el("li", { text: `${v.reviewer}: ${v.decision}` })));
  const vote = async (decision) => {
    try {
      const res = await api(`/review/${c.id}/${decision}`, { method: "POST", json: {} });
      votes.replaceChildren(...res.votes.map((v) => el("li", { text: `${v.reviewer}: ${v.decision}` })));
      status(out, res.actionable ? "Confirmed by two reviewers: actionable." : `Recorded (${res.status}); ${res.status === "open" ? "a second, different reviewer must confirm." : ""}`, true);
    } catch (e) { status(out, e.message); }
  };
  const evidence = hit && hit.crop
    ? el("img", { class: "crop", src: `${API}/events/${hit.id}/evidence`, alt: `probe crop of case ${c.id}` })
    : el("p", { text: "No probe crop kept." });
  return el("article", { class: "card", "data-case": c.id, "aria-label": `case ${c.id}` },
    el("h3", { text: `Case ${c.id}: ${c.subject} in ${c.gallery}` }),
    el("div", { class: "grid" }, evidence,
      el("p", { text: "Enrolled reference: a protected template only; Airside keeps no enrolment photo." })),
    el("p", { text: `Score ${c.score.toFixed(3)} against threshold ${c.threshold.toFixed(3)} · camera ${hit?.camera ?? "?"} · opened ${c.opened_at} by ${c.opened_by} · decide before ${c.deadline}` }),
    votes,
    el("button", { onclick: () => vote("confirm"), text: "Confirm" }), " ",
    el("button", { class: "danger", onclick: () => vote("reject"), text: "Reject" }),
    out);
}

// -------------------------------------------------------------------- enrolment desk

function enrolDesk(main) {
  const camera = deviceCamera();
  const gOut = el("p", { role: "status", id: "gallery-result" });
  const eOut = el("div", { role: "status", id: "enrol-result" });
  const galleryForm = el("form", { id: "gallery-form", "aria-label": "Create a gallery" },
    el("h3", { text: "Create a gallery" }),
    el("label", { for: "g-name", text: "Name" }), el("input", { id: "g-name", required: true }),
    el("label", { for: "g-purpose", text: "Purpose (e.g. boarding:KE123)" }), el("input", { id: "g-purpose", required: true }),
    el("label", { for: "g-departs", text: "Departure (date and time, optional)" }), el("input", { id: "g-departs", type: "datetime-local" }),
    el("label", { for: "g-retain", text: "Keep templates for (hours after departure or creation)" }), el("input", { id: "g-retain", type: "number", min: "1", value: "24" }),
    el("button", { type: "submit", text: "Create gallery" }), gOut);
  galleryForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { name: val("g-name"), purpose: val("g-purpose"), retain_seconds: Number(val("g-retain")) * 3600 };
    if (val("g-departs")) body.departs = new Date(val("g-departs")).toISOString();
    try { const g = await api("/galleries", { method: "POST", json: body }); status(gOut, `Gallery ${g.name} created for ${g.purpose}.`, true); }
    catch (err) { status(gOut, err.message); }
  });
  const enrolForm = el("form", { id: "enrol-form", "aria-label": "Enrol a traveller" },
    el("h3", { text: "Enrol a traveller" }),
    el("label", { for: "e-gallery", text: "Gallery" }), el("input", { id: "e-gallery", required: true }),
    el("label", { for: "e-subject", text: "Subject reference (booking or document number)" }), el("input", { id: "e-subject", required: true }),
    el("label", { for: "e-basis", text: "Legal basis" }),
    el("select", { id: "e-basis" }, ["consent", "legal_obligation", "public_task", "contract"].map((b) => el("option", { value: b, text: b }))),
    el("label", { for: "e-ref", text: "Basis reference (consent form id, legal instrument)" }), el("input", { id: "e-ref" }),
    el("label", { for: "e-image", text: "Photo" }), el("input", { id: "e-image", type: "file", accept: "image/*" }),
    camera.controls,
    el("button", { type: "button", class: "secondary", id: "e-check", text: "Check the photo", onclick: () => checkPhoto() }),
    el("div", { role: "status", id: "quality-result" }),
    el("button", { type: "submit", text: "Enrol" }), eOut);
  // The quality verdict and its reasons, before anything is saved (POST .../quality).
  async function checkPhoto() {
    const q = document.getElementById("quality-result");
    const file = document.getElementById("e-image").files[0] || camera.photo;
    if (!file || !val("e-gallery")) { q.replaceChildren(el("p", { class: "error", text: "Name the gallery and choose or take a photo first." })); return; }
    const f = new FormData();
    f.append("image", file, file.name || "capture.jpg");
    try {
      const v = await api(`/galleries/${encodeURIComponent(val("e-gallery"))}/quality`, { method: "POST", form: f });
      q.replaceChildren(
        el("p", { class: v.ok ? "ok" : "error", text: v.ok ? `Quality ${v.quality} of 100 (this gallery asks for ${v.quality_bar}): it can be enrolled.` : `It would be refused: ${v.message}` }),
        ...(v.reasons || []).map((r) => el("p", { text: `\u2022 ${r}` })));
    } catch (err) { q.replaceChildren(el("p", { class: "error", text: err.message })); }
  }
  camera.onphoto = checkPhoto;
  enrolForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = new FormData();
    const file = document.getElementById("e-image").files[0];
    if (!file && !camera.photo) { eOut.replaceChildren(el("p", { class: "error", text: "Choose a photo or take one with the camera." })); return; }
    form.append("image", file || camera.photo, file ? file.name : "capture.jpg");
    form.append("basis", val("e-basis"));
    if (val("e-ref")) form.append("basis_ref", val("e-ref"));
    try {
      const r = await api(`/galleries/${encodeURIComponent(val("e-gallery"))}/subjects/${encodeURIComponent(val("e-subject"))}/enrolments`, { method: "POST", form });
      eOut.replaceChildren(el("p", { class: "ok", text: `Enrolled ${r.subject}: ${r.templates} template(s) kept.` }),
        ...(r.refused || []).map((x) => el("p", { class: "error", text: `Refused: ${JSON.stringify(x)}` })));
    } catch (err) { eOut.replaceChildren(el("p", { class: "error", text: `Not enrolled: ${err.message}` })); }
  });
  main.append(el("div", { class: "grid" }, isAdmin() || can("gallery.create") ? galleryForm : "", enrolForm, batchForm()));
}

// A photo from the device camera (getUserMedia), taken into a JPEG blob; nothing is sent
// until the officer presses Enrol.
function deviceCamera() {
  const video = el("video", { id: "e-video", autoplay: true, muted: true, playsinline: true, hidden: true, width: "320" });
  const note = el("p", { role: "status", id: "e-camera-status" });
  const cam = { photo: null, stream: null };
  const start = el("button", { type: "button", class: "secondary", id: "e-camera", text: "Use the camera", onclick: async () => {
    try {
      cam.stream = await navigator.mediaDevices.getUserMedia({ video: true });
      video.srcObject = cam.stream;
      video.hidden = false;
      video.onplaying = () => { take.hidden = false; }; // a frame to take is there now
    } catch (err) { status(note, `No camera: ${err.message}`); }
  } });
  const take = el("button", { type: "button", id: "e-take", hidden: true, text: "Take photo", onclick: () => {
    const canvas = el("canvas", { width: video.videoWidth, height: video.videoHeight });
    canvas.getContext("2d").drawImage(video, 0, 0);
    canvas.toBlob((blob) => {
      cam.photo = blob;
      if (blob) {
        status(note, `Photo taken (${canvas.width}x${canvas.height}); it is saved only when you enrol.`, true);
        if (cam.onphoto) cam.onphoto();
      }
      else status(note, "The camera gave no picture: try again.");
    }, "image/jpeg", 0.92);
    for (const t of cam.stream.getTracks()) t.stop();
    video.hidden = true;
    take.hidden = true;
  } });
  cam.controls = el("div", {}, start, " ", take, video, note);
  return cam;
}

// Batch enrolment from a CSV manifest (subject,photo,basis,basis_ref) and the photos it
// names, one API call per row, with a progress bar and a result per row.
function batchForm() {
  const bar = el("progress", { id: "b-progress", value: "0", max: "1", hidden: true });
  const rows = el("tbody", { id: "b-rows" });
  const form = el("form", { id: "batch-form", "aria-label": "Batch enrolment" },
    el("h3", { text: "Batch enrolment from a manifest" }),
    el("label", { for: "b-gallery", text: "Gallery for the batch" }), el("input", { id: "b-gallery", required: true }),
    el("label", { for: "b-csv", text: "Manifest (CSV: subject,photo,basis,basis_ref)" }), el("input", { id: "b-csv", type: "file", accept: ".csv,text/csv", required: true }),
    el("label", { for: "b-photos", text: "The photos it names" }), el("input", { id: "b-photos", type: "file", accept: "image/*", multiple: true, required: true }),
    el("button", { type: "submit", text: "Enrol the batch" }), bar,
    el("table", {}, el("thead", {}, el("tr", {}, ...["row", "subject", "result"].map((h) => el("th", { text: h })))), rows));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    rows.replaceChildren();
    const text = await document.getElementById("b-csv").files[0].text();
    const photos = new Map([...document.getElementById("b-photos").files].map((f) => [f.name, f]));
    const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
    const header = lines.shift().split(",").map((h) => h.trim());
    bar.max = lines.length; bar.value = 0; bar.hidden = false;
    for (const [i, line] of lines.entries()) {
      const cells = line.split(",").map((c) => c.trim());
      const row = Object.fromEntries(header.map((h, k) => [h, cells[k] || ""]));
      let result;
      const photo = photos.get(row.photo);
      if (!photo) result = el("span", { class: "error", text: `photo ${row.photo} not chosen` });
      else {
        const f = new FormData();
        f.append("image", photo);
        f.append("basis", row.basis || "consent");
        if (row.basis_ref) f.append("basis_ref", row.basis_ref);
        try {
          const r = await api(`/galleries/${encodeURIComponent(val("b-gallery"))}/subjects/${encodeURIComponent(row.subject)}/enrolments`, { method: "POST", form: f });
          result = el("span", { class: "ok", text: `enrolled (${r.templates} template)` });
        } catch (err) { result = el("span", { class: "error", text: err.message }); }
      }
      rows.append(el("tr", {}, el("td", { text: i + 2 }), el("td", { text: row.subject }), el("td", {}, result)));
      bar.value = i + 1;
    }
  });
  return form;
}

const val = (id) => document.getElementById(id).value.trim();

// ---------------------------------------------------------------------- check a face

function checkFace(main) {
  const out = el("div", { role: "status", id: "check-result" });
  const form = el("form", { id: "verify-form", "aria-label": "Verify two photos" },
    el("h3", { text: "Are these the same person?" }),
    el("label", { for: "v-a", text: "Photo A (e.g. the live capture)" }), el("input", { id: "v-a", type: "file", accept: "image/*", required: true }),
    el("label", { for: "v-b", text: "Photo B (e.g. the passport photo)" }), el("input", { id: "v-b", type: "file", accept: "image/*", required: true }),
    el("button", { type: "submit", text: "Verify" }), out);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData();
    f.append("image_a", document.getElementById("v-a").files[0]);
    f.append("image_b", document.getElementById("v-b").files[0]);
    try {
      const r = await api("/verify", { method: "POST", form: f });
      out.replaceChildren(el("p", { class: r.match ? "ok" : "error", text: `${r.match ? "Match" : "No match"}: score ${r.score.toFixed(3)} against threshold ${r.threshold.toFixed(3)}.` }),
        el("p", { text: `The threshold is set so that about ${r.fmr_target} of impostor pairs (two different people) would be accepted.` }));
    } catch (err) { out.replaceChildren(el("p", { class: "error", text: err.message })); }
  });
  const iOut = el("div", { role: "status", id: "identify-result" });
  const identify = el("form", { id: "identify-form", "aria-label": "Identify against a gallery" },
    el("h3", { text: "Who is this, in a gallery?" }),
    el("label", { for: "i-gallery", text: "Gallery to search" }), el("input", { id: "i-gallery", required: true }),
    el("label", { for: "i-image", text: "Photo" }), el("input", { id: "i-image", type: "file", accept: "image/*", required: true }),
    el("button", { type: "submit", text: "Identify" }), iOut);
  identify.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData();
    f.append("image", document.getElementById("i-image").files[0]);
    try {
      const r = await api(`/galleries/${encodeURIComponent(val("i-gallery"))}/identify`, { method: "POST", form: f });
      const best = r.candidates && r.candidates[0];
      iOut.replaceChildren(
        el("p", { class: r.match ? "ok" : "error", text: r.match ? `Match: ${r.subject} (score ${best.score.toFixed(3)}).` : "Nobody in the gallery matches." }),
        el("p", { text: `Threshold ${Number(r.threshold).toFixed(3)}: set so that about ${r.fpir_target} of searches for someone not enrolled in these ${r.gallery_size} would wrongly match.` }),
        r.review_case ? el("p", { text: `A watchlist gallery: review case ${r.review_case} opened; not actionable until two reviewers confirm.` }) : "");
    } catch (err) { iOut.replaceChildren(el("p", { class: "error", text: err.message })); }
  });
  main.append(el("div", { class: "grid" }, form, can("identify") ? identify : ""));
}

// ------------------------------------------------------------- subjects and rights

function subjects(main) {
  const out = el("div", { role: "status", id: "erase-result" });
  const form = el("form", { id: "erase-form", "aria-label": "Erase a subject" },
    el("h3", { text: "Erase a subject (right to erasure)" }),
    el("label", { for: "s-ref", text: "Subject reference" }), el("input", { id: "s-ref", required: true }),
    el("label", { for: "s-reason", text: "Reason (kept in the receipt)" }), el("input", { id: "s-reason", value: "request of the data subject" }),
    el("button", { class: "danger", type: "submit", text: "Erase everywhere" }), out);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const receipt = await api(`/subjects/${encodeURIComponent(val("s-ref"))}?reason=${encodeURIComponent(val("s-reason"))}`, { method: "DELETE" });
      const blob = new Blob([JSON.stringify(receipt, null, 2)], { type: "application/json" });
      out.replaceChildren(el("p", { class: "ok", text: "Erased everywhere. Give the signed receipt to the person who asked: Airside keeps no copy that names them." }),
        el("a", { id: "receipt-link", href: URL.createObjectURL(blob), download: "erasure-receipt.json", text: "Download the receipt" }),
        el("pre", { text: JSON.stringify(receipt, null, 2) }));
    } catch (err) { out.replaceChildren(el("p", { class: "error", text: err.message })); }
  });
  const wOut = el("p", { role: "status" });
  const withdraw = el("form", { id: "withdraw-form", "aria-label": "Withdraw consent" },
    el("h3", { text: "Withdraw consent for one purpose" }),
    el("label", { for: "w-ref", text: "Subject reference" }), el("input", { id: "w-ref", required: true }),
    el("label", { for: "w-purpose", text: "Purpose" }), el("input", { id: "w-purpose", required: true }),
    el("button", { type: "submit", text: "Withdraw" }), wOut);
  withdraw.addEventListener("submit", async (e) => {
    e.preventDefault();
    try { await api(`/subjects/${encodeURIComponent(val("w-ref"))}/consent/withdraw`, { method: "POST", json: { purpose: val("w-purpose") } }); status(wOut, "Withdrawn: that purpose's templates are erased.", true); }
    catch (err) { status(wOut, err.message); }
  });
  const fOut = el("div", { role: "status", id: "find-result" });
  const find = el("form", { id: "find-form", "aria-label": "Find a subject" },
    el("h3", { text: "Find a subject" }),
    el("label", { for: "f-ref", text: "Subject reference to find" }), el("input", { id: "f-ref", required: true }),
    el("button", { type: "submit", text: "Find" }), fOut);
  find.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await api(`/subjects/${encodeURIComponent(val("f-ref"))}`);
      fOut.replaceChildren(
        el("p", { text: `${r.subject} is enrolled in: ${Object.entries(r.galleries).map(([g, n]) => `${g} (${n} template${n === 1 ? "" : "s"})`).join(", ")}` }),
        el("table", {}, el("thead", {}, el("tr", {}, ...["basis", "purpose", "since", "until", "withdrawn"].map((h) => el("th", { text: h })))),
          el("tbody", {}, r.bases.map((b) => el("tr", {}, el("td", { text: b.kind }), el("td", { text: b.purpose }), el("td", { text: b.granted_at }), el("td", { text: b.expires_at || "" }), el("td", { text: b.withdrawn ? "yes" : "no" }))))));
    } catch (err) { fOut.replaceChildren(el("p", { class: "error", text: err.message })); }
  });
  main.append(el("div", { class: "grid" }, can("subject.list") || isAdmin() ? find : "", isAdmin() ? form : "", withdraw));
}

// ----------------------------------------------------------------------- governance

async function governance(main) {
  const verifyOut = el("div", { role: "status", id: "audit-result" });
  const verify = el("button", { id: "audit-verify", text: "Verify the audit chain", onclick: async () => {
    verifyOut.replaceChildren(el("p", { text: "Verifying..." }));
    try {
      const r = await api("/audit/verify");
      verifyOut.replaceChildren(el("p", { class: r.ok ? "ok" : "error", text: r.ok ? `The chain verifies: ${r.records} records, ${r.signed_records} signed.` : `The chain does NOT verify: ${r.problems.length} problem(s).` }),
        ...(r.problems || []).map((p) => el("p", { class: "error", text: JSON.stringify(p) })));
    } catch (e) { verifyOut.replaceChildren(el("p", { class: "error", text: e.message })); }
  } });
  main.append(el("div", { class: "card" }, el("h3", { text: "Audit log" }), can("audit.verify") ? verify : "", verifyOut));
  const retention = el("div", { class: "card", id: "retention" }, el("h3", { text: "Galleries, purposes and retention" }));
  main.append(retention);
  try {
    const { items } = await api("/galleries");
    retention.append(el("table", {}, el("thead", {}, el("tr", {}, ...["gallery", "purpose", "subjects", "templates kept until", "then kept for"].map((h) => el("th", { text: h })))),
      el("tbody", {}, items.map((g) => el("tr", {}, el("td", { text: g.name }), el("td", { text: g.purpose }), el("td", { text: g.subjects }),
        el("td", { text: g.retain_until || "no end date" }), el("td", { text: g.retain_seconds ? `${Math.round(g.retain_seconds / 3600)} h` : "" }))))),
      el("p", { text: "The purge runs on schedule in the server and removes what is due; its records are in the audit log." }));
  } catch (e) { retention.append(el("p", { class: "error", text: e.message })); }
  if (can("principal.list")) {
    const who = el("div", { class: "card", id: "access" }, el("h3", { text: "Who may search which gallery" }));
    main.append(who);
    try {
      const { items } = await api("/principals");
      who.append(el("table", {}, el("thead", {}, el("tr", {}, ...["principal", "role", "galleries (purpose)", "state"].map((h) => el("th", { text: h })))),
        el("tbody", {}, items.map((p) => el("tr", {}, el("td", { text: p.name }), el("td", { text: p.role }),
          el("td", { text: ["admin", "auditor"].includes(p.role) ? "all (global role)" : p.scopes.map((sc) => `${sc.gallery} (${sc.purpose})`).join(", ") || "none" }),
          el("td", { text: p.disabled ? "disabled" : "active" }))))));
    } catch (e) { who.append(el("p", { class: "error", text: e.message })); }
  }
  if (can("report.governance")) {
    const reports = el("div", { class: "card", id: "reports" }, el("h3", { text: "Fairness and accuracy reports" }));
    main.append(reports);
    try {
      const { items } = await api("/reports");
      const frame = el("iframe", { title: "Selected report", sandbox: "allow-same-origin", hidden: true });
      reports.append(items.length
        ? el("ul", {}, items.map((r) => el("li", {}, el("button", { class: "secondary", "data-report": r.name, text: `${r.name} (${r.modified})`, onclick: () => { frame.src = `${API}/reports/files/${encodeURIComponent(r.name)}`; frame.hidden = false; } }))))
        : el("p", { text: "None produced yet: run airside evaluate or airside fairness with --html into the data directory's reports folder." }), frame);
    } catch (e) { reports.append(el("p", { class: "error", text: e.message })); }
    const holder = el("div", { class: "card", id: "report" }, el("h3", { text: "Governance report" }));
    main.append(holder);
    try {
      const html = await api("/reports/governance", { accept: "text/html" });
      holder.append(el("iframe", { title: "Governance report", sandbox: "allow-same-origin", srcdoc: html })); // no scripts run in it
    } catch (e) { holder.append(el("p", { class: "error", text: e.message })); }
  }
}

// --------------------------------------------------------------- cameras and scenes

async function camerasPage(main) {
  const list = el("div", { class: "card", id: "camera-list" }, el("h3", { text: "Cameras" }));
  const editor = el("div", { class: "card", id: "scene-editor" }, el("h3", { text: "Scene" }), el("p", { text: "Choose a camera's \u201cDraw its scene\u201d." }));
  const aOut = el("p", { role: "status", id: "camera-result" });
  const add = el("form", { id: "camera-form", "aria-label": "Add a camera" },
    el("h3", { text: "Add a camera" }),
    el("label", { for: "c-name", text: "Camera name" }), el("input", { id: "c-name", required: true }),
    el("label", { for: "c-source", text: "Source (rtsp://, http(s)://, a file, camera:0)" }), el("input", { id: "c-source", required: true }),
    el("label", { for: "c-galleries", text: "Galleries to search (comma-separated, optional)" }), el("input", { id: "c-galleries" }),
    el("label", { for: "c-scene", text: "Scene file on the server (for zones and lines)" }), el("input", { id: "c-scene" }),
    el("button", { type: "submit", text: "Add camera" }), aOut);
  let editing = null; // the camera whose settings the form holds, or null to add one
  add.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { name: val("c-name"), source: val("c-source"), galleries: val("c-galleries") ? val("c-galleries").split(",").map((g) => g.trim()) : [] };
    if (val("c-scene")) body.scene = val("c-scene");
    try {
      if (editing) {
        await api(`/cameras/${encodeURIComponent(editing)}`, { method: "PUT", json: body });
        status(aOut, `Camera ${body.name} changed and restarted.`, true);
      } else {
        await api("/cameras", { method: "POST", json: body });
        status(aOut, `Camera ${body.name} added and started.`, true);
      }
      refresh();
    } catch (err) { status(aOut, err.message); }
  });
  const edit = (c) => {
    editing = c.name;
    for (const [id, v] of [["c-name", c.name], ["c-source", c.source], ["c-galleries", (c.galleries || []).join(", ")], ["c-scene", c.scene || ""]]) document.getElementById(id).value = v;
    document.getElementById("c-name").readOnly = true;
    add.querySelector("h3").textContent = `Change camera ${c.name}`;
    add.querySelector("button[type=submit]").textContent = "Save changes";
    document.getElementById("c-source").focus();
  };
  main.append(el("div", { class: "grid" }, list, add), editor);
  async function refresh() {
    try {
      const { items } = await api("/cameras");
      list.replaceChildren(el("h3", { text: "Cameras" }), el("table", {}, el("tbody", {}, items.map((c) => el("tr", {},
        el("td", { text: c.name }), el("td", {}, el("span", { class: `tag ${c.state}`, text: c.state })),
        el("td", {}, el("button", { class: "secondary", "data-edit": c.name, text: "Change", onclick: () => edit(c) }), " ",
          el("button", { class: "secondary", "data-draw": c.name, text: "Draw its scene", onclick: () => sceneEditor(editor, c.name) })))))));
    } catch (err) { list.append(el("p", { class: "error", text: err.message })); }
  }
  refresh();
}

function sceneEditor(card, camera) {
  const shapes = { zones: {}, lines: {} };
  let pending = [];
  const img = el("img", { id: "snapshot", alt: `snapshot of camera ${camera}, faces blurred` });
  const canvas = el("canvas", { id: "scene-canvas", "aria-label": "Click to place points", style: "position:absolute;left:0;top:0;cursor:crosshair" });
  const stage = el("div", { style: "position:relative;display:inline-block" }, img, canvas);
  const kind = el("select", { id: "d-kind" }, el("option", { value: "zone", text: "zone (polygon)" }), el("option", { value: "line", text: "counting line (2 points)" }));
  const name = el("input", { id: "d-name", value: "zone-1" });
  const way = el("select", { id: "d-in" }, ["down", "up", "left", "right"].map((w) => el("option", { value: w, text: w })));
  const out = el("p", { role: "status", id: "scene-result" });
  const listing = el("ul", { id: "shapes" });
  const draw = () => {
    canvas.width = img.clientWidth; canvas.height = img.clientHeight;
    const g = canvas.getContext("2d");
    const px = ([x, y]) => [x * canvas.width, y * canvas.height];
    g.lineWidth = 2; g.font = "14px system-ui";
    for (const [n, pts] of Object.entries(shapes.zones)) {
      g.strokeStyle = "#ffd400"; g.fillStyle = "rgba(255,212,0,.2)"; g.beginPath();
      pts.forEach((p, i) => (i ? g.lineTo(...px(p)) : g.moveTo(...px(p)))); g.closePath(); g.fill(); g.stroke();
      g.fillStyle = "#ffd400"; g.fillText(n, ...px(pts[0]));
    }
    for (const [n, ln] of Object.entries(shapes.lines)) {
      g.strokeStyle = "#00e5ff"; g.beginPath(); g.moveTo(...px(ln.points[0])); g.lineTo(...px(ln.points[1])); g.stroke();
      g.fillStyle = "#00e5ff"; g.fillText(`${n} (in: ${ln.in})`, ...px(ln.points[0]));
    }
    g.fillStyle = "#ff3b30";
    for (const p of pending) { const [x, y] = px(p); g.fillRect(x - 3, y - 3, 6, 6); }
    listing.replaceChildren(...Object.keys(shapes.zones).map((n) => el("li", { text: `zone ${n}` })), ...Object.keys(shapes.lines).map((n) => el("li", { text: `line ${n}` })));
  };
  canvas.addEventListener("click", (e) => {
    const r = canvas.getBoundingClientRect();
    pending.push([+((e.clientX - r.left) / r.width).toFixed(4), +((e.clientY - r.top) / r.height).toFixed(4)]);
    if (kind.value === "line" && pending.length === 2) {
      shapes.lines[name.value.trim()] = { points: pending, in: way.value };
      pending = [];
    }
    draw();
  });
  const finish = el("button", { type: "button", id: "d-finish", text: "Finish zone", onclick: () => {
    if (pending.length < 3) { status(out, "A zone needs at least 3 points."); return; }
    shapes.zones[name.value.trim()] = pending; pending = []; draw();
  } });
  const clear = el("button", { type: "button", class: "secondary", text: "Start over", onclick: () => { shapes.zones = {}; shapes.lines = {}; pending = []; draw(); } });
  const save = el("button", { type: "button", id: "d-save", text: "Save the scene", onclick: async () => {
    try {
      const r = await api(`/cameras/${encodeURIComponent(camera)}/scene`, { method: "PUT", json: shapes });
      status(out, `Saved ${Object.keys(r.scene.zones).length} zone(s) and ${Object.keys(r.scene.lines).length} line(s); camera ${camera} restarted to use them.`, true);
    } catch (err) { status(out, `Not saved: ${err.message}`); }
  } });
  card.replaceChildren(el("h3", { text: `Scene of ${camera}` }),
    el("p", { text: "Click points on the picture: a zone is a polygon (finish it with \u201cFinish zone\u201d), a counting line is two clicks. Faces in the picture are blurred." }),
    el("div", {}, el("label", { for: "d-kind", text: "Draw " }), kind, " ", el("label", { for: "d-name", text: "named " }), name, " ", el("label", { for: "d-in", text: "line's in-direction " }), way),
    stage, el("div", {}, finish, " ", clear, " ", save), listing, out);
  img.onload = async () => {
    try {
      const current = await api(`/cameras/${encodeURIComponent(camera)}/scene`);
      shapes.zones = current.zones;
      shapes.lines = current.lines;
    } catch (err) { status(out, err.message); }
    draw();
  };
  img.onerror = () => status(out, "No picture from this camera now.");
  img.src = `${API}/cameras/${encodeURIComponent(camera)}/snapshot?t=${Date.now()}`;
}

// ------------------------------------------------------------------------ start

document.getElementById("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const key = document.getElementById("key");
  try {
    const who = await api("/session", { method: "POST", json: { key: key.value.trim() } });
    key.value = "";
    state.csrf = who.csrf_token;
    sessionStorage.setItem("airside.csrf", who.csrf_token);
    signedIn(who);
  } catch (err) {
    document.getElementById("signin-error").textContent = `Not signed in: ${err.message}`;
  }
});
window.addEventListener("hashchange", route);
api("/session").then(signedIn, () => signedOut());

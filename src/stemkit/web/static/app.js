// stemkit's page: uploads, jobs with live progress (server-sent events), a synchronised
// multi-stem player with solo/mute/volume and waveforms, scores and A/B of two models.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], songs: {}, jobs: {}, sources: {}, player: null };

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error(body?.error || `${response.status} ${response.statusText}`);
  return body;
}

function say(text) { $("message").textContent = text || ""; }

function fmt(seconds) {
  const s = Math.max(0, Math.floor(seconds || 0));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// ---- models and their cards

async function loadModels() {
  state.models = await api("/api/models");
  for (const id of ["model", "model-a", "model-b"]) {
    const select = $(id);
    select.innerHTML = "";
    for (const m of state.models) {
      const option = new Option(`${m.name}${m.usable ? "" : " (not available)"}`, m.name);
      option.disabled = !m.usable;
      select.add(option);
    }
  }
  $("model").value = "default";
  $("model-a").value = "default";
  $("model-b").value = "identity";
  showCard();
}

function model(name) { return state.models.find((m) => m.name === name); }

function showCard() {
  const m = model($("model").value);
  if (!m) return;
  const score = m.score
    ? `${m.score.metric} on ${m.score.test_set}: ${Object.entries(m.score.per_stem).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ")} (mean ${m.score.mean.toFixed(2)} dB)`
    : "no published score";
  $("card").innerHTML = "";
  const lines = [
    ["", m.title],
    ["stems", m.stems.join(", ")],
    ["trained on", m.trained_on || "—"],
    ["parameters", m.parameters ? `${(m.parameters / 1e6).toFixed(1)} M` : "—"],
    ["score", score],
    ["status", m.status],
  ];
  for (const [key, value] of lines) {
    const div = document.createElement("div");
    if (key) { const b = document.createElement("b"); b.textContent = `${key}: `; div.append(b); }
    div.append(value);
    $("card").append(div);
  }
  const mode = $("mode");
  mode.innerHTML = "";
  mode.add(new Option(`all stems (${m.stems.length})`, ""));
  for (const stem of m.stems) mode.add(new Option(`two stems: ${stem} + no_${stem}`, stem));
}

// ---- uploads and jobs

async function upload(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  const song = await api("/api/songs", { method: "POST", body: form });
  state.songs[song.id] = song;
  return song;
}

async function createJob(songId, modelName, extra = {}) {
  const body = { song_id: songId, model: modelName, format: $("format").value, ...extra };
  const job = await api("/api/jobs", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  track(job);
  return job;
}

async function separateFiles(files) {
  say("");
  for (const file of files) {
    try {
      const song = await upload(file);
      const two = $("mode").value;
      await createJob(song.id, $("model").value, two ? { two_stems: two } : {});
    } catch (error) {
      say(`${file.name}: ${error.message}`);
    }
  }
}

function track(job) {
  state.jobs[job.id] = job;
  render(job);
  if (job.status === "done" || job.status === "failed" || state.sources[job.id]) return;
  const source = new EventSource(`/api/jobs/${job.id}/events`);
  state.sources[job.id] = source;
  source.addEventListener("job", (event) => {
    const update = JSON.parse(event.data);
    state.jobs[update.id] = update;
    render(update);
    if (update.status === "done" || update.status === "failed") {
      source.close();
      delete state.sources[job.id];
      onFinished(update);
    }
  });
  source.addEventListener("deleted", () => { source.close(); delete state.sources[job.id]; });
  source.onerror = () => { source.close(); delete state.sources[job.id]; setTimeout(() => refresh(job.id), 1000); };
}

async function refresh(jobId) {
  try { track(await api(`/api/jobs/${jobId}`)); } catch (error) { /* deleted */ }
}

function render(job) {
  let li = document.querySelector(`li[data-job="${job.id}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.job = job.id;
    li.innerHTML = `<div class="name"></div><div class="meta"></div>
      <div class="bar"><div data-testid="progress"></div></div><div class="error"></div>
      <div class="actions"><button class="open" data-testid="open" hidden>Open player</button>
      <button class="delete">Delete</button></div>`;
    li.querySelector(".open").onclick = () => openPlayer([job.id]);
    li.querySelector(".delete").onclick = () => deleteJob(job.id);
    $("jobs").prepend(li);
  }
  const song = state.songs[job.song_id];
  li.className = job.status;
  li.querySelector(".name").textContent = song ? song.name : job.song_id;
  const mode = job.options.two_stems ? `two stems (${job.options.two_stems})` : "all stems";
  const percent = Math.round(job.progress * 100);
  li.querySelector(".meta").textContent = `${job.model} · ${mode} · ${job.status} ${percent} %`;
  const bar = li.querySelector("[data-testid=progress]");
  bar.style.width = `${percent}%`;
  bar.dataset.value = String(percent);
  li.querySelector(".error").textContent = job.error || "";
  li.querySelector(".open").hidden = job.status !== "done";
}

async function deleteJob(jobId) {
  try { await api(`/api/jobs/${jobId}`, { method: "DELETE" }); } catch (error) { say(error.message); }
  delete state.jobs[jobId];
  document.querySelector(`li[data-job="${jobId}"]`)?.remove();
  if (state.player?.jobs.includes(jobId)) closePlayer();
}

// Jobs started together for A/B open together once both are done.
const pendingPairs = [];
function onFinished(job) {
  if (job.status !== "done") return;
  for (const pair of pendingPairs) {
    if (pair.includes(job.id) && pair.every((id) => state.jobs[id]?.status === "done")) {
      pendingPairs.splice(pendingPairs.indexOf(pair), 1);
      openPlayer(pair);
      return;
    }
  }
  if (!state.player && !pendingPairs.some((p) => p.includes(job.id))) openPlayer([job.id]);
}

async function compare() {
  say("");
  try {
    const song = await api("/api/songs/generate", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ seconds: Number($("gen-seconds").value), seed: Number($("gen-seed").value) }),
    });
    state.songs[song.id] = song;
    const a = await createJob(song.id, $("model-a").value);
    const b = await createJob(song.id, $("model-b").value);
    pendingPairs.push([a.id, b.id]);
  } catch (error) {
    say(error.message);
  }
}

// ---- the player: one audio element per stem (per job for A/B), kept in sync

function closePlayer() {
  if (!state.player) return;
  for (const element of state.player.elements) { element.pause(); element.removeAttribute("src"); element.load(); element.remove(); }
  clearInterval(state.player.timer);
  state.player = null;
  $("player").hidden = true;
}

async function openPlayer(jobIds) {
  closePlayer();
  const jobs = jobIds.map((id) => state.jobs[id]);
  const song = state.songs[jobs[0].song_id] || await api(`/api/songs/${jobs[0].song_id}`);
  state.songs[song.id] = song;
  const player = { jobs: jobIds, elements: [], rows: {}, side: 0, playing: false, timer: null };
  state.player = player;
  $("player").hidden = false;
  $("player-title").textContent = `Player — ${song.name} — ${jobs.map((j) => j.model).join(" vs ")}`;
  $("ab").hidden = jobs.length < 2;
  $("zip").href = `/api/jobs/${jobIds[0]}/zip`;
  const table = $("stems");
  table.innerHTML = "";
  const results = await Promise.all(jobs.map((j) => song.references
    ? api(`/api/jobs/${j.id}/scores`).catch(() => ({})) : Promise.resolve({})));
  const scores = results.map((r) => r.scores || {});
  const baseline = results[0].baseline || {};
  $("scores-note").textContent = song.references
    ? "scores: uSDR in dB against the true stems (higher is better); mix: the mixture itself as the estimate, the score to beat" : "";
  const stems = [...new Set(jobs.flatMap((j) => j.stems))];
  for (const stem of stems) {
    const row = table.insertRow();
    row.dataset.stem = stem;
    row.insertCell().outerHTML = `<td class="stem">${stem}</td>`;
    const wave = row.insertCell();
    wave.className = "wave";
    const canvas = document.createElement("canvas");
    canvas.width = 800; canvas.height = 48;
    const playhead = document.createElement("div");
    playhead.className = "playhead";
    wave.append(canvas, playhead);
    // a click on a waveform moves every stem there
    canvas.onclick = (e) => {
      const master = player.elements[0];
      if (!master?.duration) return;
      const t = (e.offsetX / canvas.clientWidth) * master.duration;
      for (const audio of player.elements) audio.currentTime = t;
      tick();
    };
    const controls = row.insertCell();
    controls.innerHTML = `<button class="solo" title="solo">S</button> <button class="mute" title="mute">M</button>
      <input class="volume" type="range" min="0" max="1" step="0.01" value="1" title="volume">`;
    const score = row.insertCell();
    score.className = "score";
    score.innerHTML = jobs.map((j, i) => {
      const value = scores[i]?.[stem];
      const label = jobs.length > 1 ? `<span class="group">${"AB"[i]}</span> ` : "";
      return value === undefined || value === null ? "" : `${label}${value.toFixed(2)} dB`;
    }).concat(baseline[stem] === undefined || baseline[stem] === null ? []
      : [`<span class="group">mix</span> ${baseline[stem].toFixed(2)} dB`]).filter(Boolean).join("<br>");
    const links = row.insertCell();
    links.innerHTML = jobs.filter((j) => j.stems.includes(stem)).map((j, i) =>
      `<a href="/api/jobs/${j.id}/stems/${encodeURIComponent(stem)}" download>${jobs.length > 1 ? "AB"[jobs.indexOf(j)] + " " : ""}download</a>`).join(" ");
    const entry = { solo: false, mute: false, volume: 1, audio: [], canvas };
    player.rows[stem] = entry;
    jobs.forEach((job, side) => {
      if (!job.stems.includes(stem)) return;
      const audio = new Audio(`/api/jobs/${job.id}/stems/${encodeURIComponent(stem)}`);
      audio.preload = "auto";
      audio.dataset.stem = stem;
      audio.dataset.side = String(side);
      audio.dataset.testid = "stem-audio";
      document.body.append(audio);
      player.elements.push(audio);
      entry.audio.push(audio);
    });
    controls.querySelector(".solo").onclick = (e) => { entry.solo = !entry.solo; e.target.classList.toggle("on", entry.solo); mix(); };
    controls.querySelector(".mute").onclick = (e) => { entry.mute = !entry.mute; e.target.classList.toggle("on", entry.mute); mix(); };
    controls.querySelector(".volume").oninput = (e) => { entry.volume = Number(e.target.value); mix(); };
  }
  mix();
  for (const job of jobs) drawWaves(job.id);
  const master = player.elements[0];
  master.addEventListener("loadedmetadata", () => { $("position").max = String(master.duration); tick(); });
  master.addEventListener("ended", () => pause());
  player.timer = setInterval(tick, 250);
}

async function drawWaves(jobId) {
  const peaks = await api(`/api/jobs/${jobId}/waveform?points=800`);
  for (const [stem, values] of Object.entries(peaks)) {
    const canvas = state.player?.rows[stem]?.canvas;
    if (!canvas || canvas.dataset.drawn) continue;  // A/B: the first job that has the stem
    canvas.dataset.drawn = "1";
    const ctx = canvas.getContext("2d");
    const h = canvas.height / 2;
    ctx.fillStyle = "#2f6fd6";
    values.forEach(([low, high], x) => {
      const top = h - Math.min(1, high) * h;
      ctx.fillRect(x * canvas.width / values.length, top, Math.max(1, canvas.width / values.length), Math.max(1, (high - low) * h));
    });
  }
}

function mix() {
  const player = state.player;
  if (!player) return;
  const soloing = Object.values(player.rows).some((r) => r.solo);
  for (const row of Object.values(player.rows)) {
    const audible = soloing ? row.solo : !row.mute;
    for (const audio of row.audio) {
      const side = Number(audio.dataset.side);
      audio.volume = row.volume;
      audio.muted = !audible || side !== player.side;
    }
  }
}

async function play() {
  const player = state.player;
  if (!player) return;
  const t = player.elements[0].currentTime;
  for (const audio of player.elements) audio.currentTime = t;
  await Promise.all(player.elements.map((audio) => audio.play().catch((error) => say(`cannot play: ${error.message}`))));
  player.playing = true;
  $("play").textContent = "❚❚ Pause";
}

function pause() {
  const player = state.player;
  if (!player) return;
  for (const audio of player.elements) audio.pause();
  player.playing = false;
  $("play").textContent = "▶ Play";
}

function tick() {
  const player = state.player;
  if (!player) return;
  const master = player.elements[0];
  $("clock").textContent = `${fmt(master.currentTime)} / ${fmt(master.duration)}`;
  $("position").value = String(master.currentTime);
  const at = master.duration ? (100 * master.currentTime) / master.duration : 0;
  for (const head of document.querySelectorAll("#stems .playhead")) head.style.left = `${at}%`;
  // Elements drift apart by a few ms over a song: pull the others back to the first.
  if (player.playing) {
    for (const audio of player.elements.slice(1)) {
      if (Math.abs(audio.currentTime - master.currentTime) > 0.05) audio.currentTime = master.currentTime;
    }
  }
}

// ---- wiring

function wire() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); separateFiles([...e.dataTransfer.files]); });
  $("file").addEventListener("change", (e) => { separateFiles([...e.target.files]); e.target.value = ""; });
  $("model").addEventListener("change", showCard);
  $("compare").addEventListener("click", compare);
  $("play").addEventListener("click", () => (state.player?.playing ? pause() : play()));
  $("position").addEventListener("input", (e) => {
    for (const audio of state.player?.elements || []) audio.currentTime = Number(e.target.value);
  });
  for (const button of document.querySelectorAll("#ab button")) {
    button.addEventListener("click", () => {
      if (!state.player) return;
      state.player.side = Number(button.dataset.side);
      document.querySelectorAll("#ab button").forEach((b) => b.classList.toggle("on", b === button));
      mix();
    });
  }
}

async function start() {
  wire();
  try {
    await loadModels();
    for (const song of await api("/api/songs")) state.songs[song.id] = song;
    for (const job of (await api("/api/jobs")).reverse()) track(job);
  } catch (error) {
    say(error.message);
  }
}

start();

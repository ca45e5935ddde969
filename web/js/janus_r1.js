// Janus-R1: show the reasoning / scores text on the node after a run, and stream it while the node runs.
// The frontend renders ui.text only for core nodes, so this adds one read-only text box to Janus-R1 nodes.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const TEXT_NODES = new Set(["JanusR1CoTGenerate", "JanusR1Judge", "JanusR1Regenerate", "JanusR1BestOfN", "JanusR1Ask"]);
const SHOWS_IMAGE = new Set(["JanusR1CoTGenerate", "JanusR1Regenerate", "JanusR1BestOfN"]); // + their text
const WIDGET = "janus_r1_text";
const BOX_MIN_HEIGHT = 220; // ~12 lines of reasoning, whatever size the node's image preview takes
const IMAGE_ROOM = 300; // room below the widgets for the image the node shows after its run
// the frontend's own streamed-text box (ComfyUI frontend >= 1.2x shows progress_text natively)
const NATIVE_PREVIEW = "$$node-text-preview";

function dropNativePreview(node) {
  // after the run our box holds the whole reasoning; the native box would keep only the last streamed chunk
  const i = node.widgets?.findIndex((x) => x.name === NATIVE_PREVIEW) ?? -1;
  if (i > -1) {
    node.widgets[i].onRemove?.();
    node.widgets.splice(i, 1);
  }
}

// What the artist types comes first on the node, without moving anything in saved workflows: widget values are
// stored by position (widgets_values), in the backend's input order, which old files and API converters rely on.
// So only the display order changes; serialize/configure keep using the backend's order.
const SHOWN_FIRST = { JanusR1Regenerate: ["prompt", "critique"] };

function showFirst(node, names) {
  node.janusR1Stored = [...node.widgets]; // the backend's order: the one widgets_values uses
  const first = names.map((n) => node.widgets.find((w) => w.name === n)).filter(Boolean);
  const rest = node.widgets.filter((w) => !first.includes(w));
  node.widgets.splice(0, node.widgets.length, ...first, ...rest);
}

function storedValues(node) {
  return node.janusR1Stored.filter((w) => w.serialize !== false).map((w) => w.value);
}

function isJanus(node) {
  return String(node?.comfyClass ?? node?.type ?? "").startsWith("JanusR1");
}

// once a run ends (success, error, interrupt) no streamed progress label ("[edit]", "[image 1/10]") may stay on
// a Janus-R1 node: the native streamed-text box goes, and our box keeps only a final text
function clearProgressLabels() {
  for (const node of app.graph?._nodes ?? []) {
    if (!isJanus(node)) continue;
    dropNativePreview(node);
    if (node.janusR1Streamed) {
      node.janusR1Streamed = false;
      const w = node.widgets?.find((x) => x.name === WIDGET);
      if (w) {
        w.value = node.janusR1Final ?? "";
        if (w.inputEl) w.inputEl.value = w.value;
      }
    }
    node.setDirtyCanvas?.(true, true);
  }
}

// The frontend draws a node's live preview (a blob URL from b_preview_with_metadata) in preference to the images
// of its executed output, so after a run a Janus-R1 node kept showing the last partial image of one sampling row
// (Best of N: often not the pick). Once the node has reported the images it returns, the preview goes.
function dropLivePreview(node) {
  const key = String(node.id);
  const blobs = app.nodePreviewImages?.[key];
  if (!blobs) return;
  if (blobs[Symbol.iterator]) for (const url of blobs) URL.revokeObjectURL(url);
  delete app.nodePreviewImages[key];
}

function removeWidget(node, name) {
  const i = node.widgets?.findIndex((x) => x.name === name) ?? -1;
  if (i > -1) {
    node.widgets[i].onRemove?.();
    node.widgets.splice(i, 1);
  }
}

// A new run of a Janus-R1 node starts: nothing of the previous run stays on it -- its reasoning box, the images
// it returned, its live preview -- so the node never shows two runs at once (issue 25, finding 5; also after a
// Cancel, whose partial preview would otherwise sit beside the older run's text). The live text of the new run
// is the frontend's own streamed box; the final text comes back in a fresh box when the node reports.
function clearForNewRun(node) {
  const key = String(node.id);
  node.janusR1Runs = (node.janusR1Runs ?? 0) + 1; // streamed chunks of the old run are stale
  node.janusR1Streamed = false;
  node.janusR1Final = undefined;
  removeWidget(node, WIDGET);
  removeWidget(node, NATIVE_PREVIEW);
  removeWidget(node, "$$canvas-image-preview");
  dropLivePreview(node);
  if (app.nodeOutputs?.[key]) delete app.nodeOutputs[key];
  node.imgs = undefined;
  node.images = undefined;
  node.preview = undefined;
  node.setDirtyCanvas?.(true, true);
}

function showText(node, text, streamed = false) {
  if (!node || typeof text !== "string") return;
  let w = node.widgets?.find((x) => x.name === WIDGET);
  if (!w) {
    const helpers = window.comfyAPI?.widgets?.ComfyWidgets;
    if (helpers?.STRING) {
      w = helpers.STRING(node, WIDGET, ["STRING", { multiline: true }], app).widget;
    } else {
      w = node.addWidget("text", WIDGET, "", () => {}, {});
    }
    w.serialize = false; // never stored in the workflow: widgets_values stay as the backend expects
    w.options = w.options ?? {};
    // ... and never sent with the prompt: an input the server does not know still enters ComfyUI's cache key,
    // so a box sent back would make every Run after the first redo the node (issue 25, finding 1)
    w.options.serialize = false;
    if (w.inputEl) {
      w.inputEl.readOnly = true;
      w.inputEl.style.opacity = 0.85;
      w.inputEl.dataset.janusR1 = "reasoning";
    }
    // a box that holds a dozen lines however much room the image preview takes, and room for that image
    w.options.getMinHeight = () => BOX_MIN_HEIGHT;
    const room = SHOWS_IMAGE.has(node.comfyClass ?? node.type) ? IMAGE_ROOM : 0;
    node.setSize?.([Math.max(node.size[0], 420), Math.max(node.size[1], node.computeSize()[1] + room)]);
  }
  node.janusR1Streamed = streamed;
  if (!streamed) node.janusR1Final = text;
  w.value = text;
  if (w.inputEl) w.inputEl.value = text;
  node.setDirtyCanvas?.(true, true);
  app.graph?.setDirtyCanvas?.(true, true);
}

// Ask answers greedily by default (temperature 0), and a greedy answer does not depend on the seed: the control
// the frontend puts next to any "seed" starts at "fixed" on Ask, and does nothing while temperature is 0 whatever
// it says -- a seed stepped after every Run would redo Ask and every node fed by its text (issue 25, finding 3).
function keepGreedySeed(node) {
  const control = node.widgets?.find((w) => w.name === "control_after_generate");
  if (!control || control.janusR1Greedy) return;
  control.janusR1Greedy = true;
  control.value = "fixed"; // a new node; a loaded workflow's saved choice is put back by configure
  const greedy = () => Number(node.widgets?.find((w) => w.name === "temperature")?.value) === 0;
  for (const hook of ["beforeQueued", "afterQueued"]) {
    const original = control[hook];
    if (typeof original !== "function") continue;
    control[hook] = function () {
      if (!greedy()) return original.apply(this, arguments);
    };
  }
}

function executingNode(detail) {
  const id = detail && typeof detail === "object" ? (detail.display_node ?? detail.node) : detail;
  if (id == null) return null;
  return app.graph?.getNodeById?.(Number(String(id).split(":").pop())) ?? null;
}

app.registerExtension({
  name: "JanusR1.ReasoningText",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!String(nodeData.name).startsWith("JanusR1")) return;
    if (nodeData.name === "JanusR1Ask") {
      const created = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const r = created?.apply(this, arguments);
        keepGreedySeed(this);
        return r;
      };
    }
    const first = SHOWN_FIRST[nodeData.name];
    if (first) {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const r = onNodeCreated?.apply(this, arguments);
        if (this.widgets?.length) showFirst(this, first);
        return r;
      };
      const serialize = nodeType.prototype.serialize;
      nodeType.prototype.serialize = function () {
        const o = serialize.apply(this, arguments);
        if (this.janusR1Stored && o.widgets_values) o.widgets_values = storedValues(this);
        return o;
      };
      const onConfigure = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function (info) {
        // LiteGraph has just put info.widgets_values onto the widgets in display order: redo it in stored order
        if (this.janusR1Stored && Array.isArray(info?.widgets_values)) {
          const stored = this.janusR1Stored.filter((w) => w.serialize !== false);
          info.widgets_values.forEach((v, i) => {
            if (stored[i]) stored[i].value = v;
          });
        }
        return onConfigure?.apply(this, arguments);
      };
    }
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      dropNativePreview(this); // "[edit]", "[image 1]": labels of the finished run
      if (message?.images?.length) dropLivePreview(this); // show what the node returns
      if (!TEXT_NODES.has(nodeData.name)) return;
      const text = message?.text;
      if (text == null) return;
      this.janusR1Runs = (this.janusR1Runs ?? 0) + 1; // streamed chunks still in flight are now stale
      dropNativePreview(this);
      showText(this, Array.isArray(text) ? text.join("\n") : text);
    };
  },
  async setup() {
    // streamed reasoning (PromptServer.send_progress_text), where the server and frontend offer it
    api.addEventListener("progress_text", (e) => {
      const { nodeId, text } = e.detail ?? {};
      const node = app.graph?.getNodeById?.(Number(nodeId));
      if (!node || !TEXT_NODES.has(node.comfyClass ?? node.type)) return;
      // checked after the frontend's own listener has run: where it streams the text itself, leave it to it;
      // and never over the final text (onExecuted may run before this deferred check)
      const runs = node.janusR1Runs;
      setTimeout(() => {
        if (node.janusR1Runs !== runs) return;
        if (!node.widgets?.some((x) => x.name === NATIVE_PREVIEW)) showText(node, text, true);
      }, 0);
    });
    api.addEventListener("executing", (e) => {
      const node = executingNode(e.detail);
      if (node && isJanus(node)) clearForNewRun(node);
    });
    for (const ev of ["execution_success", "execution_error", "execution_interrupted"]) {
      api.addEventListener(ev, () => setTimeout(clearProgressLabels, 0));
    }
  },
});

// Janus-R1: show the reasoning / scores text on the node after a run, and stream it while the node runs.
// The frontend renders ui.text only for core nodes, so this adds one read-only text box to Janus-R1 nodes.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const TEXT_NODES = new Set(["JanusR1CoTGenerate", "JanusR1Judge", "JanusR1Regenerate", "JanusR1BestOfN", "JanusR1Ask"]);
const WIDGET = "janus_r1_text";
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

function showText(node, text) {
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
    if (w.inputEl) {
      w.inputEl.readOnly = true;
      w.inputEl.style.opacity = 0.85;
      w.inputEl.dataset.janusR1 = "reasoning";
    }
    // room for a few lines of reasoning beyond the widgets' minimum heights
    node.setSize?.([Math.max(node.size[0], 380), Math.max(node.size[1], node.computeSize()[1] + 120)]);
  }
  w.value = text;
  if (w.inputEl) w.inputEl.value = text;
  node.setDirtyCanvas?.(true, true);
  app.graph?.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "JanusR1.ReasoningText",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!TEXT_NODES.has(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
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
        if (!node.widgets?.some((x) => x.name === NATIVE_PREVIEW)) showText(node, text);
      }, 0);
    });
  },
});

// Janus-R1: show the reasoning / scores text on the node after a run, and stream it while the node runs.
// The frontend renders ui.text only for core nodes, so this adds one read-only text box to Janus-R1 nodes.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const TEXT_NODES = new Set(["JanusR1CoTGenerate", "JanusR1Judge", "JanusR1Regenerate", "JanusR1BestOfN"]);
const WIDGET = "janus_r1_text";

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
    node.setSize?.([Math.max(node.size[0], 380), Math.max(node.size[1], node.computeSize()[1])]);
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
      showText(this, Array.isArray(text) ? text.join("\n") : text);
    };
  },
  async setup() {
    // streamed reasoning (PromptServer.send_progress_text), where the server and frontend offer it
    api.addEventListener("progress_text", (e) => {
      const { nodeId, text } = e.detail ?? {};
      const node = app.graph?.getNodeById?.(Number(nodeId));
      if (node && TEXT_NODES.has(node.comfyClass ?? node.type)) showText(node, text);
    });
  },
});

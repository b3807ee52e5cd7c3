// The submit form: the type from GET /v1/taskTypes with its example payload,
// a JSON editor, a file upload for csv_stats (into payload.csv) and for image
// (base64, into payload.image). A refusal's field violations are shown
// beside the field they name.

import { get, post } from "./api.js";
import { clearSlots, errorBox, errorSlots, field, fill, h, json, labelsText, namedIn, showViolations } from "./dom.js";

// What "Submit again" on a task page puts in the form.
let prefill = null;

export function submitAgain(task) {
  prefill = {
    type: task.type,
    payload: task.payload || {},
    labels: labelsText(task.labels),
    max_attempts: task.max_attempts || "",
    priority: task.priority || "",
  };
  location.hash = "#/submit";
}

// The form's fields that a violation's path can name; anything else is shown
// above the button.
const FIELDS = ["type", "payload", "labels", "max_attempts", "priority"];

export function render(main) {
  const errors = errorSlots([...FIELDS, "form"]);
  const type = h("select", { id: "type", name: "type", required: true, "aria-describedby": "type-description error-type" });
  const description = h("p", { class: "muted", id: "type-description" });
  const payload = h("textarea", { id: "payload", name: "payload", spellcheck: "false", "aria-describedby": "error-payload" });
  const csvFile = h("input", { id: "csv-file", type: "file", accept: ".csv,text/csv", "aria-describedby": "error-payload" });
  const imageFile = h("input", { id: "image-file", type: "file", accept: "image/*", "aria-describedby": "error-payload" });
  const labels = h("input", { id: "labels", name: "labels", placeholder: "team=docs, env=test", "aria-describedby": "error-labels" });
  const attempts = h("input", { id: "max_attempts", name: "max_attempts", type: "number", min: 1, max: 100, placeholder: "server default", "aria-describedby": "error-max_attempts" });
  const priority = h("input", { id: "priority", name: "priority", type: "number", min: -1000, max: 1000, placeholder: "0", "aria-describedby": "error-priority" });
  const csvField = h("div", { class: "field", hidden: true }, h("label", { for: "csv-file" }, "CSV file (fills payload.csv)"), csvFile);
  const imageField = h("div", { class: "field", hidden: true }, h("label", { for: "image-file" }, "Image file (fills payload.image)"), imageFile);
  const button = h("button", { type: "submit", class: "primary" }, "Submit");
  const form = h(
    "form",
    { class: "form", "aria-label": "Submit a task", novalidate: true },
    field("type", "Task type", type, description, errors.type),
    field("payload", "Payload (JSON)", payload, errors.payload),
    csvField,
    imageField,
    field("labels", "Labels", labels, errors.labels),
    field("max_attempts", "Max attempts", attempts, errors.max_attempts),
    field("priority", "Priority", priority, errors.priority),
    errors.form,
    h("div", { class: "actions" }, button),
  );
  const problem = h("div");
  fill(main, h("h1", {}, "Submit a task"), problem, form);

  let types = [];
  const typeNamed = (name) => types.find((t) => t.name === name);

  function chooseType(name, examplePayload = true) {
    const chosen = typeNamed(name);
    fill(description, (chosen && chosen.description) || "");
    csvField.hidden = name !== "csv_stats";
    imageField.hidden = name !== "image";
    if (examplePayload) payload.value = json((chosen && chosen.example_payload) || {});
  }

  function editPayload(change) {
    let value = {};
    try {
      value = JSON.parse(payload.value || "{}");
    } catch {
      value = {};
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) value = {};
    change(value);
    payload.value = json(value);
  }

  csvFile.addEventListener("change", async () => {
    const file = csvFile.files[0];
    if (file) {
      const text = await file.text();
      editPayload((value) => (value.csv = text));
    }
  });
  imageFile.addEventListener("change", () => {
    const file = imageFile.files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = () => {
      // A data: URL; the payload takes the base64 after its comma.
      const encoded = String(reader.result).split(",", 2)[1] || "";
      editPayload((value) => (value.image = encoded));
    };
    reader.readAsDataURL(file);
  });
  type.addEventListener("change", () => chooseType(type.value));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearSlots(errors);
    const request = { type: type.value };
    try {
      request.payload = JSON.parse(payload.value || "{}");
    } catch (error) {
      fill(errors.payload, `payload: not valid JSON: ${error.message}`);
      payload.focus();
      return;
    }
    const pairs = labels.value.split(",").map((pair) => pair.trim()).filter(Boolean);
    if (pairs.length) {
      request.labels = {};
      for (const pair of pairs) {
        const [key, ...rest] = pair.split("=");
        if (!rest.length) {
          fill(errors.labels, `labels: "${pair}" must read key=value`);
          return;
        }
        request.labels[key.trim()] = rest.join("=").trim();
      }
    }
    if (attempts.value !== "") request.max_attempts = Number(attempts.value);
    if (priority.value !== "") request.priority = Number(priority.value);
    button.disabled = true;
    try {
      const reply = await post("/v1/tasks", request);
      location.hash = `#/tasks/${encodeURIComponent(reply.task.id)}`;
    } catch (error) {
      showViolations(error, errors, namedIn(FIELDS));
    } finally {
      button.disabled = false;
    }
  });

  get("/v1/taskTypes")
    .then((reply) => {
      types = reply.task_types || [];
      for (const t of types) type.append(h("option", { value: t.name }, t.name));
      const again = prefill;
      prefill = null;
      if (again) {
        if (!typeNamed(again.type)) type.append(h("option", { value: again.type }, again.type));
        type.value = again.type;
        chooseType(again.type, false);
        payload.value = json(again.payload);
        labels.value = again.labels;
        attempts.value = again.max_attempts;
        priority.value = again.priority;
      } else if (types.length) {
        chooseType(type.value);
      }
    })
    .catch((error) => fill(problem, errorBox(error)));
  return () => {};
}

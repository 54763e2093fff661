// Run a TF.js graph model in Node with TensorFlow.js's pure-JavaScript CPU backend (the
// reference runtime the project's ports are checked against; no native binaries).
//
//   NODE_PATH=.node/node_modules node bench/tfjs_run.js MODEL_JSON IN_DIR OUT_DIR
//
// IN_DIR/inputs.json: {"shape": [1, 3, H, W], "files": ["a.f32", ...], "outputs": [names]};
// each file holds one input as little-endian float32. For each input file and output name,
// OUT_DIR/<file>.<output>.f32 is written, and OUT_DIR/outputs.json lists the shapes.
"use strict";
const fs = require("fs");
const path = require("path");
const tf = require("@tensorflow/tfjs");

function fileHandler(modelJson) {
  return {
    load: async () => {
      const spec = JSON.parse(fs.readFileSync(modelJson, "utf8"));
      const dir = path.dirname(modelJson);
      const shards = [];
      const weightSpecs = [];
      for (const group of spec.weightsManifest) {
        for (const p of group.paths) shards.push(fs.readFileSync(path.join(dir, p)));
        weightSpecs.push(...group.weights);
      }
      const all = Buffer.concat(shards);
      const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.length);
      return {
        modelTopology: spec.modelTopology,
        format: spec.format,
        generatedBy: spec.generatedBy,
        convertedBy: spec.convertedBy,
        signature: spec.signature,
        weightSpecs,
        weightData,
      };
    },
  };
}

async function main() {
  const [modelJson, inDir, outDir] = process.argv.slice(2);
  if (!outDir) {
    console.error("usage: node tfjs_run.js MODEL_JSON IN_DIR OUT_DIR");
    process.exit(2);
  }
  await tf.setBackend("cpu");
  const model = await tf.loadGraphModel(fileHandler(modelJson));
  const req = JSON.parse(fs.readFileSync(path.join(inDir, "inputs.json"), "utf8"));
  fs.mkdirSync(outDir, { recursive: true });
  const shapes = {};
  for (const file of req.files) {
    const buf = fs.readFileSync(path.join(inDir, file));
    const data = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
    const x = tf.tensor(data, req.shape, "float32");
    const outs = model.execute(x, req.outputs);
    const list = Array.isArray(outs) ? outs : [outs];
    for (let k = 0; k < list.length; k++) {
      const values = await list[k].data();
      const name = `${file}.${req.outputs[k]}.f32`;
      fs.writeFileSync(path.join(outDir, name), Buffer.from(values.buffer));
      shapes[req.outputs[k]] = list[k].shape;
    }
    tf.dispose([x, ...list]);
  }
  fs.writeFileSync(
    path.join(outDir, "outputs.json"),
    JSON.stringify({ backend: tf.getBackend(), version: tf.version.tfjs, shapes })
  );
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});

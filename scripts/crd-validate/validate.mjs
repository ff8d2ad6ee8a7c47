// Validates prometheus-operator and cert-manager objects against the CRD schemas the models
// packages compile.
// stdin: a JSON array of [label, object]; one line per object on stdout, exit 1 if any fails.
// The CRD schemas type every field and list the required ones, but like the API server they
// do not refuse unknown fields (the server prunes them): the caller compares what matters.
import { readFileSync } from "node:fs";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { Certificate } from "@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate";
import { Issuer } from "@kubernetes-models/cert-manager/cert-manager.io/v1/Issuer";

const models = { PodMonitor, PrometheusRule, Certificate, Issuer };
let failed = 0;
for (const [label, object] of JSON.parse(readFileSync(0, "utf8"))) {
  const Model = models[object.kind];
  if (!Model || object.apiVersion !== Model.apiVersion) {
    console.log(`${label}: no schema for ${object.apiVersion} ${object.kind}`);
    failed++;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`ok  ${label}: ${object.kind} matches the ${Model.apiVersion} CRD schema`);
  } catch (e) {
    console.log(`${label}: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);

// Writes real pino, bunyan and winston output for tests/exporter/test_presets.py.
// Run once; the output files are committed so the tests need neither Node nor these packages:
//   mkdir /tmp/gen && cd /tmp/gen && npm init -y && npm install pino winston bunyan
//   NODE_PATH=/tmp/gen/node_modules node tests/exporter/samples/make_samples.js tests/exporter/samples
// Every file logs the same story (see SCRIPT in make_samples.py) at the levels the logger has.
"use strict";
const fs = require("fs");
const path = require("path");

const out = process.argv[2] || __dirname;

function connRefused() {
  const e = new Error("connect ECONNREFUSED 10.0.0.5:5432");
  e.code = "ECONNREFUSED";
  return e;
}

class PaymentDeclinedError extends Error {
  constructor(msg) { super(msg); this.name = "PaymentDeclinedError"; }
}

function pinoSample() {
  const pino = require("pino");
  const file = path.join(out, "pino.log");
  const dest = pino.destination({ dest: file, sync: true });
  const log = pino({ level: "trace" }, dest).child({ component: "checkout" });
  log.trace("starting worker 3");
  log.debug("cache miss for key user:42");
  log.info({ duration_ms: 12.5 }, "request completed");
  log.warn("slow query took 5400ms");
  log.error({ err: connRefused() }, "database connection failed");
  log.error(new PaymentDeclinedError("payment processing failed for order 1234"));
  log.fatal("out of memory");
}

function bunyanSample() {
  const bunyan = require("bunyan");
  const file = path.join(out, "bunyan.log");
  const stream = fs.createWriteStream(file);
  const log = bunyan.createLogger({ name: "billing", level: "trace",
                                    streams: [{ stream, level: "trace" }],
                                    serializers: bunyan.stdSerializers });
  log.trace("starting worker 3");
  log.debug("cache miss for key user:42");
  log.info({ duration_ms: 12.5 }, "request completed");
  log.warn("slow query took 5400ms");
  log.error({ err: connRefused() }, "database connection failed");
  log.error(new PaymentDeclinedError("payment processing failed for order 1234"));
  log.fatal("out of memory");
  stream.end();
}

function winstonSample(name, levels, calls) {
  const winston = require("winston");
  const { combine, timestamp, errors, json } = winston.format;
  const file = path.join(out, name);
  const log = winston.createLogger({
    levels, level: Object.keys(levels).pop(),
    format: combine(errors({ stack: true }), timestamp(), json()),
    defaultMeta: { service: "orders" },
    transports: [new winston.transports.File({ filename: file })],
  });
  calls(log);
}

try { fs.unlinkSync(path.join(out, "winston.log")); } catch (e) { /* first run */ }
try { fs.unlinkSync(path.join(out, "winston-syslog.log")); } catch (e) { /* first run */ }
pinoSample();
bunyanSample();
// npm levels (winston's default): error warn info http verbose debug silly
winstonSample("winston.log", require("winston").config.npm.levels, (log) => {
  log.silly("starting worker 3");
  log.debug("cache miss for key user:42");
  log.verbose("config loaded");
  log.http("GET /health 200");
  log.info("request completed", { duration_ms: 12.5 });
  log.warn("slow query took 5400ms");
  log.error("database connection failed", connRefused());
  log.error(new PaymentDeclinedError("payment processing failed for order 1234"));
});
// syslog levels: emerg alert crit error warning notice info debug
winstonSample("winston-syslog.log", require("winston").config.syslog.levels, (log) => {
  log.debug("cache miss for key user:42");
  log.info("request completed", { duration_ms: 12.5 });
  log.notice("config reloaded");
  log.warning("slow query took 5400ms");
  log.error("database connection failed", connRefused());
  log.crit("disk full on /var/lib/db");
  log.alert("replica lag over limit");
  log.emerg("out of memory");
});

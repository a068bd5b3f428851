// Part of `make ui-check` (scripts/ui_check.sh), not of CI. Drives Debian's chromium with
// playwright-core: opens a run's artifact view in the model-training view, expands the
// checkpoint, final-model and plot folders (collapsed until clicked), opens the Poincaré-disk
// picture, waits for the expand animations to end, checks that every given name is visible,
// and saves a screenshot.
//
// usage: NODE_PATH=<dir>/node_modules node ui_check.cjs BASE_URL EXP_ID RUN_ID SHOT NAME...
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const [base, exp, run, shot, ...names] = process.argv.slice(2);
const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run"];
const node = (name) => `[data-testid="artifact-tree-node"][artifact-name="${name}"]`;

// The tree expands with a JS-driven animation: wait until an element stops moving.
async function settled(page, selector) {
  let last = null;
  for (let i = 0; i < 100; i++) {
    const box = await page.locator(selector).first().boundingBox();
    const now = JSON.stringify(box);
    if (box && now === last) return;
    last = now;
    await page.waitForTimeout(150);
  }
  throw new Error(`${selector} kept moving`);
}

(async () => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "hype-ui-profile-"));  // fresh user data
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: FLAGS,
    viewport: { width: 1400, height: 900 },
  });
  try {
    const page = context.pages()[0] || (await context.newPage());
    // workflowType: the sidebar's model-training view (the UI defaults to GenAI otherwise)
    const url = `${base}/#/experiments/${exp}/runs/${run}/artifacts?workflowType=machine_learning`;
    console.log(`opening ${url}`);
    await page.goto(url, { waitUntil: "load" });  // never network-idle: the UI polls
    await page.locator(node("hype_checkpoints")).waitFor({ state: "visible", timeout: 60000 });
    // The MLflow Assistant panel opens itself on a first visit; it only hides the page.
    const close = page.getByRole("button", { name: /close/i });
    if (await close.count()) await close.first().click().catch(() => {});
    for (const folder of ["hype_checkpoints", "hype_model", "plots"]) {
      await page.locator(node(folder)).click();
    }
    await page.locator(node("poincare_disk.png")).click();
    for (const name of names) {
      await page.locator(node(name)).waitFor({ state: "visible", timeout: 20000 });
    }
    await settled(page, node(names[names.length - 1]));
    // the picture's preview, loaded after the click
    await page.waitForFunction(() => [...document.images].some((i) => i.complete && i.naturalWidth > 300),
      null, { timeout: 20000 }).catch(() => console.log("(the picture's preview did not load)"));
    let missing = 0;
    for (const name of names) {
      const visible = await page.locator(node(name)).isVisible();
      console.log(`${visible ? "visible" : "NOT VISIBLE"}: ${name}`);
      if (!visible) missing++;
    }
    await page.screenshot({ path: shot });
    console.log(`screenshot: ${shot}`);
    process.exitCode = missing ? 1 : 0;
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});

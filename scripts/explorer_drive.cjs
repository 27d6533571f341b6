// Drives the explorer page in headless Chromium for scripts/explorer_check.py: drags sliders with the mouse,
// presses arrow keys, clicks a baseline and a measured point, and after each move reads what the page shows
// (each weight's and prediction's full value from data-value, the interval from data-low/data-high).
//   node scripts/explorer_drive.cjs PAGE.html READINGS.json SCREENSHOT.png [/usr/bin/chromium]
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const [page_, out, shot, exe] = process.argv.slice(2);

async function read(page, step) {
  return page.evaluate((step) => {
    const x = [...document.querySelectorAll("#sliders .wv")].map((e) => parseFloat(e.dataset.value));
    const predictions = {};
    for (const tr of document.querySelectorAll("#caps tr")) {
      const v = tr.querySelector("td.pred"), iv = tr.querySelector("td.iv");
      predictions[tr.dataset.capability] = {
        value: parseFloat(v.dataset.value), text: v.textContent,
        low: iv.dataset.low === "" ? null : parseFloat(iv.dataset.low),
        high: iv.dataset.high === "" ? null : parseFloat(iv.dataset.high),
      };
    }
    return { step, x, predictions };
  }, step);
}

async function drag(page, i, fraction) {
  const box = await page.locator("#w-" + i).boundingBox();
  const y = box.y + box.height / 2;
  const value = await page.locator("#w-" + i).inputValue();
  const min = parseFloat(await page.locator("#w-" + i).getAttribute("min"));
  const max = parseFloat(await page.locator("#w-" + i).getAttribute("max"));
  const from = box.x + ((parseFloat(value) - min) / (max - min)) * box.width;
  await page.mouse.move(from, y);
  await page.mouse.down();
  const to = box.x + fraction * box.width;
  for (let s = 1; s <= 5; s++) await page.mouse.move(from + ((to - from) * s) / 5, y);
  await page.mouse.up();
}

(async () => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "explorer-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: exe || "/usr/bin/chromium", headless: true, viewport: { width: 1400, height: 640 },
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--no-first-run", "--disable-quic"],
  });
  const requests = [];
  context.on("request", (r) => { if (!r.url().startsWith("file:")) requests.push(r.url()); });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto("file://" + path.resolve(page_));
  const readings = [await read(page, "opened (chosen mixture)")];
  const moves = [[0, 0.9], [1, 0.1], [2, 0.7], [3, 0.35]];
  for (const [i, f] of moves) {
    await drag(page, i, f);
    readings.push(await read(page, `dragged slider ${i} to ${f} of its track`));
  }
  await page.locator("#w-1").focus();
  for (const key of ["ArrowRight", "ArrowLeft"]) {
    for (let n = 0; n < 7; n++) await page.keyboard.press(key);
    readings.push(await read(page, `7 x ${key} on slider 1`));
  }
  const buttons = page.locator("#markers button");
  await buttons.nth(Math.min(2, (await buttons.count()) - 1)).click();
  readings.push(await read(page, "clicked a baseline button"));
  await page.locator("#caps svg circle.meas").nth(3).click({ force: true });
  readings.push(await read(page, "clicked measured point 3"));
  await page.locator("#markers button").first().click();
  await drag(page, 2, 0.45);
  readings.push(await read(page, "chosen, then slider 2 dragged"));
  fs.mkdirSync(path.dirname(shot), { recursive: true });
  await page.screenshot({ path: shot, fullPage: true });
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
  fs.writeFileSync(out, JSON.stringify(readings));
  if (errors.length || requests.length) {
    console.error("page errors: " + JSON.stringify(errors) + "; network requests: " + JSON.stringify(requests));
    process.exit(1);
  }
})().catch((e) => { console.error(e); process.exit(1); });

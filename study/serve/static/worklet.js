// Audio worklet processors of the study serve page.
// "player": a jitter buffer (a ring of float samples) that plays the streamed continuation gaplessly; it
// waits for `prebuffer` samples before starting and after every underrun. "recorder": microphone blocks out.

class Player extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const settings = (options && options.processorOptions) || {};
    this.ring = new Float32Array(settings.capacity || sampleRate * 120);
    this.prebuffer = settings.prebuffer || Math.round(sampleRate * 0.25);
    this.read = 0; this.write = 0;          // absolute sample counts
    this.playing = false; this.ended = false;
    this.frames = 0; this.samples = 0; this.played = 0; this.underruns = 0; this.ticks = 0;
    this.port.onmessage = (event) => {
      const data = event.data;
      if (data.type === 'audio') {
        const samples = data.samples;
        for (let i = 0; i < samples.length; i++) this.ring[(this.write + i) % this.ring.length] = samples[i];
        this.write += samples.length;
        this.frames += 1; this.samples += samples.length;
        this.report();
      } else if (data.type === 'end') {
        this.ended = true;
      } else if (data.type === 'stop') {
        this.read = this.write; this.playing = false; this.ended = true;
      }
    };
  }
  report() {
    this.port.postMessage({ frames: this.frames, samples: this.samples, played: this.played,
                            buffered: this.write - this.read, underruns: this.underruns, playing: this.playing });
  }
  process(inputs, outputs) {
    const out = outputs[0][0];
    const buffered = this.write - this.read;
    if (!this.playing && (buffered >= this.prebuffer || (this.ended && buffered > 0))) this.playing = true;
    if (this.playing) {
      const count = Math.min(out.length, buffered);
      for (let i = 0; i < count; i++) out[i] = this.ring[(this.read + i) % this.ring.length];
      for (let i = count; i < out.length; i++) out[i] = 0;
      this.read += count; this.played += count;
      if (count < out.length) { this.playing = false; if (!this.ended) this.underruns += 1; }
    } else {
      out.fill(0);
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    if (++this.ticks % 32 === 0) this.report();
    return true;
  }
}

class Recorder extends AudioWorkletProcessor {
  process(inputs) {
    const input = inputs[0];
    if (input && input.length) {
      const mono = new Float32Array(input[0].length);
      for (let c = 0; c < input.length; c++) for (let i = 0; i < mono.length; i++) mono[i] += input[c][i] / input.length;
      this.port.postMessage(mono, [mono.buffer]);
    }
    return true;
  }
}

registerProcessor('player', Player);
registerProcessor('recorder', Recorder);

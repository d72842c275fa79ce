// The cache of tensors derived from parameters (cache.h): packed, transposed or stacked copies
// that cost a visible share of a layer's eval time if made on every call (packing W by group
// reads all of W, ~1 ms at d = 1024, batch 256; a 512 x 16 transpose or a [G1; V] copy costs
// several microseconds of a ~150 us call at batch 16).
//
// An entry is keyed by its kind and, per source tensor, the data pointer, shape, strides and
// version counter (an in-place update through autograd bumps it; ``param.data = other``
// changes the pointer). Not every update does: fused optimizers (``Adam(fused=True)``, which
// the trainer uses) and writes through ``param.data`` leave the version as it was, so the
// whole cache is also cleared whenever a MID-L layer switches between train and eval mode
// (``MIDL.train``: the usual train/validate loop), and on ``midl_autok.kernels.clear_cache()``.
// The entry holds the sources' storages, so their addresses cannot be reused meanwhile; an
// entry whose storages nobody else holds any more is dropped, and at most kEntries are kept
// (least recently used first out). Memory: one more copy of each derived tensor, in eval.

#include "cache.h"

#include <algorithm>
#include <mutex>

namespace {

struct Source {
  c10::Storage storage;  // kept alive: its address stays unique while the entry exists
  const void* data;
  std::vector<int64_t> sizes, strides;
  int64_t version;

  bool same(const at::Tensor& t) const {
    return data == t.data_ptr() && t.sizes().equals(sizes) && t.strides().equals(strides);
  }
};

struct Entry {
  std::vector<Source> from;
  int64_t kind;
  at::Tensor derived;
};

constexpr size_t kEntries = 128;  // a few per layer
std::mutex cache_mutex;
std::vector<Entry> cache;

}  // namespace

at::Tensor midl_derived(const std::vector<at::Tensor>& from, int64_t kind,
                        const std::function<at::Tensor()>& make) {
  for (const at::Tensor& t : from)
    if (t.is_inference()) return make();
  std::lock_guard<std::mutex> guard(cache_mutex);
  auto same = [&](const Entry& e) {
    if (e.kind != kind || e.from.size() != from.size()) return false;
    for (size_t i = 0; i < from.size(); ++i)
      if (!e.from[i].same(from[i])) return false;
    return true;
  };
  for (auto it = cache.begin(); it != cache.end(); ++it) {
    if (!same(*it)) continue;
    bool current = true;
    for (size_t i = 0; i < from.size(); ++i) current &= it->from[i].version == from[i]._version();
    if (current) {
      Entry hit = *it;
      cache.erase(it);
      cache.push_back(hit);
      return hit.derived;
    }
    cache.erase(it);  // a source changed in place: make it again
    break;
  }
  cache.erase(std::remove_if(cache.begin(), cache.end(),
                             [](const Entry& e) {
                               return std::any_of(e.from.begin(), e.from.end(),
                                                  [](const Source& s) {
                                                    return s.storage.use_count() <= 1;
                                                  });
                             }),
              cache.end());
  Entry entry{{}, kind, make()};
  for (const at::Tensor& t : from)
    entry.from.push_back(
        {t.storage(), t.data_ptr(), t.sizes().vec(), t.strides().vec(), t._version()});
  cache.push_back(entry);
  if (cache.size() > kEntries) cache.erase(cache.begin());
  return entry.derived;
}

void midl_cache_clear() {
  std::lock_guard<std::mutex> guard(cache_mutex);
  cache.clear();
}

// Test harness for hw/include/edgevit/requant.h: reads lines "acc m0 n zy relu" from stdin and prints
// requantize_int8 of each (tests/hls/test_hls_qdq.py compares them with edgevit/hls/requant.py).
#include <cstdio>

#include <edgevit/requant.h>

int main() {
    long long acc, m0;
    int n, zy, relu;
    while (std::scanf("%lld %lld %d %d %d", &acc, &m0, &n, &zy, &relu) == 5) {
        edgevit::requant_param p;
        p.m0 = m0;
        p.n = n;
        p.zy = zy;
        std::printf("%lld\n", edgevit::requantize_int8(acc, p, relu != 0));
    }
    return 0;
}
